#!/usr/bin/env bash
# Compare whole-tool backup and restore of a daily pg_dump series between
# cairn and other deduplicating backup tools (restic, borg, bupstash, rustic).
#
# Each tool gets a fresh repository with its default settings and encryption
# on. Each day's dump is piped from the page cache into the tool's stdin
# backup, one command at a time, under /usr/bin/time -v. The repository size
# (du -sb, local caches not counted) is taken after each day. Then the last
# day is restored to /dev/null and timed. See README.md beside this file.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: compare.sh [OPTIONS] DUMP...
       compare.sh [OPTIONS] --make-dumps SCALE

Back up DUMP... (one pg_dump file per day, oldest first) with each selected
tool, restore the last day, and print a comparison table.

Options:
  --work-dir DIR      Folder for repositories, caches, logs and results
                      [default: /tmp/cairn-compare]. Its repos/ and caches/
                      subfolders are deleted and rebuilt.
  --tools LIST        Comma-separated tools to run, in this order
                      [default: cairn,restic,borg,bupstash,rustic].
                      Tools that are not installed are skipped with a message.
  --runs N            Repetitions of every tool's whole sequence, each in a
                      fresh repository [default: 1]. The table shows medians.
  --cairn PATH        cairn binary [default: $CAIRN_BIN, else cairn on PATH]
  --install           Install the selected peers first: restic and borg with
                      apt-get (root), bupstash and rustic with cargo install.
                      The cargo builds take several minutes each.
  --no-verify         Skip the untimed byte-for-byte check of one restore
                      per tool (done in run 1 with cmp).
  --keep-repos        Keep each repository after its sequence; by default it
                      is deleted to save disk space.
  --make-dumps SCALE  Build the dump series first, in WORK/dumps, from a
                      throwaway PostgreSQL cluster: pgbench at SCALE plus an
                      events table with jsonb. Takes no DUMP arguments.
  --days N            Days to dump with --make-dumps [default: 3]
  --pg-bin DIR        PostgreSQL binaries for --make-dumps
                      [default: /usr/lib/postgresql/15/bin]
  -h, --help          Print this help

Passphrases come from COMPARE_PASSPHRASE (one random passphrase per call when
unset), exported to each tool as CAIRN_PASSWORD, RESTIC_PASSWORD,
BORG_PASSPHRASE and RUSTIC_PASSWORD. bupstash uses a key file instead.
EOF
}

ALL_TOOLS=(cairn restic borg bupstash rustic)
ENTRY_NAME=app.dump

work_dir=/tmp/cairn-compare
tools_csv=$(IFS=,; echo "${ALL_TOOLS[*]}")
runs=1
cairn_bin=${CAIRN_BIN:-}
install=0
verify=1
keep_repos=0
make_dumps_scale=
make_dumps_days=3
pg_bin=/usr/lib/postgresql/15/bin
dumps=()

die() {
    echo "compare.sh: $*" >&2
    exit 2
}

log() {
    echo "[$(date +%H:%M:%S)] $*" >&2
}

while (($#)); do
    case $1 in
        --work-dir) work_dir=${2:?--work-dir needs a folder}; shift 2 ;;
        --tools) tools_csv=${2:?--tools needs a list}; shift 2 ;;
        --runs) runs=${2:?--runs needs a number}; shift 2 ;;
        --cairn) cairn_bin=${2:?--cairn needs a path}; shift 2 ;;
        --install) install=1; shift ;;
        --no-verify) verify=0; shift ;;
        --keep-repos) keep_repos=1; shift ;;
        --make-dumps) make_dumps_scale=${2:?--make-dumps needs a scale}; shift 2 ;;
        --days) make_dumps_days=${2:?--days needs a number}; shift 2 ;;
        --pg-bin) pg_bin=${2:?--pg-bin needs a folder}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        --) shift; dumps+=("$@"); break ;;
        -*) die "unknown option '$1' (see --help)" ;;
        *) dumps+=("$1"); shift ;;
    esac
done

[[ $runs =~ ^[1-9][0-9]*$ ]] || die "invalid --runs '$runs': expected a positive integer"
[[ -z $make_dumps_scale || $make_dumps_scale =~ ^[1-9][0-9]*$ ]] ||
    die "invalid --make-dumps '$make_dumps_scale': expected a positive integer pgbench scale"
[[ $make_dumps_days =~ ^[1-9][0-9]*$ ]] || die "invalid --days '$make_dumps_days': expected a positive integer"

IFS=, read -r -a tools <<<"$tools_csv"
for tool in "${tools[@]}"; do
    case " ${ALL_TOOLS[*]} " in
        *" $tool "*) ;;
        *) die "unknown tool '$tool' in --tools, expected some of: ${ALL_TOOLS[*]}" ;;
    esac
done

if [[ -n $make_dumps_scale ]]; then
    ((${#dumps[@]} == 0)) || die "--make-dumps builds its own dumps, so remove the DUMP arguments"
else
    ((${#dumps[@]} > 0)) || die "missing DUMP arguments or --make-dumps SCALE (see --help)"
    for dump in "${dumps[@]}"; do
        [[ -f $dump && -r $dump ]] || die "dump file not found or not readable: $dump"
    done
fi

mkdir -p "$work_dir"
work_dir=$(cd "$work_dir" && pwd)

# ---------------------------------------------------------------------------
# Installing peers

install_peers() {
    local apt_packages=() cargo_crates=() tool
    for tool in "${tools[@]}"; do
        case $tool in
            restic) apt_packages+=(restic) ;;
            borg) apt_packages+=(borgbackup) ;;
            bupstash) cargo_crates+=(bupstash) ;;
            rustic) cargo_crates+=(rustic-rs) ;;
        esac
    done

    if ((${#apt_packages[@]})); then
        log "installing ${apt_packages[*]} with apt-get"
        if ! { apt-get update -q && apt-get install -y "${apt_packages[@]}"; }; then
            echo "compare.sh: apt-get install ${apt_packages[*]} failed, so those tools will be skipped" >&2
        fi
    fi
    if ((${#cargo_crates[@]})); then
        log "installing ${cargo_crates[*]} with cargo install (this builds from source and takes minutes)"
        if ! cargo install --locked "${cargo_crates[@]}"; then
            echo "compare.sh: cargo install ${cargo_crates[*]} failed, so those tools will be skipped" >&2
        fi
    fi
}

# ---------------------------------------------------------------------------
# Building a dump series (--make-dumps)

# Run a PostgreSQL client or server binary as the cluster owner: the postgres
# user when this script runs as root (initdb rejects root), else the caller.
pg_run() {
    if ((EUID == 0)); then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Start a cluster in a temporary folder, reachable only through a unix socket
# in that folder, and write WORK/dumps/day1.dump ... dayN.dump. Before each day
# after the first: 1% of pgbench_accounts rows get a random single-row update,
# 300 events rows are updated, 1% new events rows are added, then VACUUM
# ANALYZE runs. This is the procedure behind the series in docs/benchmarks.md.
make_dumps() {
    local scale=$1 days=$2
    local pg_dir out_dir day accounts per_client events_rows
    for binary in initdb pg_ctl pgbench psql pg_dump; do
        [[ -x $pg_bin/$binary ]] || die "PostgreSQL binary not found: $pg_bin/$binary (set --pg-bin)"
    done

    # Under /tmp, so that the postgres user can reach it and the socket path
    # stays short.
    pg_dir=$(mktemp -d -t cairn-compare-pg.XXXXXX)
    out_dir=$work_dir/dumps
    mkdir -p "$out_dir"
    if ((EUID == 0)); then
        chown postgres: "$pg_dir"
    fi

    # fsync is off because the cluster is thrown away; it does not change the dump.
    pg_run "$pg_bin/initdb" -D "$pg_dir/data" -U postgres -A trust --no-sync >"$pg_dir/initdb.log"
    pg_run "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w start \
        -o "-c listen_addresses='' -c unix_socket_directories='$pg_dir' -c fsync=off -c synchronous_commit=off"
    # shellcheck disable=SC2064 # expand pg_dir now: the trap runs after this function returns
    trap "pg_run '$pg_bin/pg_ctl' -D '$pg_dir/data' -m fast -w stop >/dev/null; rm -rf '$pg_dir'" EXIT
    export PGHOST=$pg_dir PGUSER=postgres PGDATABASE=app

    pg_run "$pg_bin/psql" -q -d postgres -c 'CREATE DATABASE app'
    log "pgbench -i at scale $scale"
    pg_run "$pg_bin/pgbench" -i -q -s "$scale"

    # About 4,500 events rows per unit of scale: 405,000 at scale 90.
    events_rows=$((scale * 4500))
    pg_run "$pg_bin/psql" -q -v ON_ERROR_STOP=1 <<EOF
CREATE TABLE events(id bigserial PRIMARY KEY, tenant_id int, created_at timestamptz, payload jsonb, note text);
INSERT INTO events(tenant_id, created_at, payload, note)
SELECT (random()*500)::int,
       now() - random() * interval '365 days',
       jsonb_build_object(
         'type', (ARRAY['order.created','order.paid','user.login','invoice.sent','item.viewed'])[1 + (random()*4)::int],
         'user_id', (random()*1000000)::int,
         'session', md5(random()::text),
         'ip', '10.' || (random()*255)::int || '.' || (random()*255)::int || '.' || (random()*255)::int,
         'amount', round((random()*1000)::numeric, 2),
         'items', jsonb_build_array(md5(random()::text), md5(random()::text), md5(random()::text)),
         'ua', 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/' || (100 + (random()*20)::int) || '.0',
         'tags', jsonb_build_array('t' || (random()*50)::int, 't' || (random()*50)::int),
         'trace', md5(random()::text) || md5(random()::text)),
       'note ' || md5(random()::text) || ' ' || repeat('x', (random()*80)::int)
FROM generate_series(1, $events_rows);
VACUUM ANALYZE;
EOF

    # pgbench -t counts transactions per client, and two clients run.
    accounts=$((scale * 100000))
    per_client=$((accounts / 100 / 2))
    cat >"$pg_dir/update_account.sql" <<EOF
\set aid random(1, $accounts)
\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
EOF
    chmod a+r "$pg_dir/update_account.sql"

    for ((day = 1; day <= days; day++)); do
        if ((day > 1)); then
            log "day $day: updating 1% of accounts and events"
            pg_run "$pg_bin/pgbench" -n -c 2 -j 2 -t "$per_client" -f "$pg_dir/update_account.sql" >/dev/null
            pg_run "$pg_bin/psql" -q -v ON_ERROR_STOP=1 <<'EOF'
UPDATE events SET payload = payload || jsonb_build_object('status', 'refunded', 'updated', now()::text),
                  note = note || ' (edited)'
 WHERE id IN (SELECT (1 + random() * (SELECT max(id) - 1 FROM events))::bigint FROM generate_series(1, 300));
INSERT INTO events(tenant_id, created_at, payload, note)
SELECT (random()*500)::int, now(),
       jsonb_build_object('type', 'order.created', 'user_id', (random()*1000000)::int,
         'session', md5(random()::text), 'amount', round((random()*1000)::numeric, 2),
         'items', jsonb_build_array(md5(random()::text), md5(random()::text)),
         'trace', md5(random()::text) || md5(random()::text)),
       'note ' || md5(random()::text)
FROM generate_series(1, (SELECT count(*) / 100 FROM events));
EOF
            pg_run "$pg_bin/psql" -q -c 'VACUUM ANALYZE'
        fi
        log "day $day: pg_dump -Fc -Z0"
        pg_run "$pg_bin/pg_dump" -Fc -Z0 app >"$out_dir/day$day.dump"
        dumps+=("$out_dir/day$day.dump")
    done

    pg_run "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null
    rm -rf "$pg_dir"
    trap - EXIT
    unset PGHOST PGUSER PGDATABASE
}

# ---------------------------------------------------------------------------
# Tool adapters. Each runs inside the subshell of one sequence, where
# tool_env has set the repository, cache and passphrase variables.

tool_command() {
    case $1 in
        cairn) echo "$cairn_bin" ;;
        borg) echo borg ;;
        *) echo "$1" ;;
    esac
}

tool_version() {
    case $1 in
        cairn) "$cairn_bin" --version ;;
        restic) restic version ;;
        borg) borg --version ;;
        bupstash) bupstash version ;;
        rustic) rustic --version ;;
    esac 2>&1 | head -n 1
}

# Set the variables that point the tool at REPO and at a cache under CACHE.
tool_env() {
    local tool=$1 repo=$2 cache=$3
    case $tool in
        cairn)
            export CAIRN_REPOSITORY=$repo CAIRN_CACHE_DIR=$cache CAIRN_PASSWORD=$passphrase ;;
        restic)
            export RESTIC_REPOSITORY=$repo RESTIC_CACHE_DIR=$cache RESTIC_PASSWORD=$passphrase ;;
        borg)
            # BORG_BASE_DIR moves borg's config, cache and security folders.
            export BORG_REPO=$repo BORG_BASE_DIR=$cache BORG_PASSPHRASE=$passphrase ;;
        bupstash)
            export BUPSTASH_REPOSITORY=$repo BUPSTASH_KEY=$cache/backup.key XDG_CACHE_HOME=$cache ;;
        rustic)
            export RUSTIC_REPOSITORY=$repo RUSTIC_CACHE_DIR=$cache RUSTIC_PASSWORD=$passphrase ;;
    esac
}

tool_init() {
    case $1 in
        cairn) "$cairn_bin" init ;;
        restic) restic init ;;
        borg) borg init --encryption=repokey-blake2 ;;
        bupstash)
            bupstash init
            bupstash new-key -o "$BUPSTASH_KEY"
            ;;
        rustic) rustic init ;;
    esac
}

# Set the array backup_argv to the command that backs up stdin as day DAY.
set_backup_argv() {
    local tool=$1 day=$2
    case $tool in
        cairn) backup_argv=("$cairn_bin" backup --stdin --name "$ENTRY_NAME") ;;
        restic) backup_argv=(restic backup --stdin --stdin-filename "$ENTRY_NAME") ;;
        borg) backup_argv=(borg create --stdin-name "$ENTRY_NAME" "::day$day" -) ;;
        bupstash) backup_argv=(bupstash put name="$ENTRY_NAME" day="$day" -) ;;
        # --force, because rustic 0.11.4 otherwise takes the previous day's
        # snapshot as parent, marks the stdin file unchanged without reading
        # stdin, and saves a snapshot with the previous day's content.
        rustic) backup_argv=(rustic backup --force --stdin-filename "$ENTRY_NAME" -) ;;
    esac
}

# Set the array restore_argv to the command that writes day DAY's entry to stdout.
set_restore_argv() {
    local tool=$1 day=$2
    case $tool in
        cairn) restore_argv=("$cairn_bin" restore "latest:$ENTRY_NAME" --stdout) ;;
        restic) restore_argv=(restic dump latest "$ENTRY_NAME") ;;
        borg) restore_argv=(borg extract --stdout "::day$day" "$ENTRY_NAME") ;;
        bupstash) restore_argv=(bupstash get day="$day") ;;
        rustic) restore_argv=(rustic dump "latest:$ENTRY_NAME") ;;
    esac
}

# ---------------------------------------------------------------------------
# Measuring

results=$work_dir/results.tsv
passphrase=${COMPARE_PASSPHRASE:-$(head -c 18 /dev/urandom | base64)}

# Print "wall user sys maxrss_kib" from a /usr/bin/time -v report.
# The wall clock reads h:mm:ss or m:ss.ss.
parse_time_report() {
    awk -F': ' '
        /Elapsed \(wall clock\)/ {
            n = split($2, part, ":"); wall = 0
            for (i = 1; i <= n; i++) wall = wall * 60 + part[i]
        }
        /User time \(seconds\)/ { user = $2 }
        /System time \(seconds\)/ { sys = $2 }
        /Maximum resident set size/ { rss = $2 }
        END { printf "%.2f %.2f %.2f %d\n", wall, user, sys, rss }
    ' "$1"
}

# Append one row for a finished step to ROWS, which run_sequence adds to
# results.tsv only when the whole sequence succeeds.
record_step() {
    local rows=$1 run=$2 tool=$3 step=$4 bytes=$5 time_report=$6 repo=$7
    local wall user sys rss repo_bytes
    read -r wall user sys rss < <(parse_time_report "$time_report")
    repo_bytes=$(du -sb "$repo" | cut -f1)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$run" "$tool" "$step" "$bytes" "$wall" "$user" "$sys" "$rss" "$repo_bytes" >>"$rows"
    log "$tool run $run $step: $(awk -v b="$bytes" -v w="$wall" 'BEGIN { printf "%.0f MB/s", b / w / 1e6 }')," \
        "wall ${wall}s, cpu $(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')s," \
        "peak RSS $((rss / 1024)) MiB, repository $((repo_bytes / 1000000)) MB"
}

# Run one tool's whole sequence in a fresh repository: init, one backup per
# dump, a timed restore of the last day, and (in run 1) an untimed check that
# the restore matches the last dump. Runs in a subshell, so set -e applies.
run_sequence() {
    local tool=$1 run=$2
    local repo=$work_dir/repos/$tool-run$run
    local cache=$work_dir/caches/$tool-run$run
    local logs=$work_dir/logs/$tool-run$run
    local day dump bytes last_day last_dump

    rm -rf "$repo" "$cache" "$logs"
    mkdir -p "$cache" "$logs" "$work_dir/repos"
    tool_env "$tool" "$repo" "$cache"

    tool_init "$tool" >"$logs/init.log" 2>&1

    for ((day = 1; day <= ${#dumps[@]}; day++)); do
        dump=${dumps[day - 1]}
        bytes=$(stat -c %s "$dump")
        set_backup_argv "$tool" "$day"
        cat "$dump" | /usr/bin/time -v -o "$logs/day$day.time" "${backup_argv[@]}" >"$logs/day$day.log" 2>&1
        record_step "$logs/rows.tsv" "$run" "$tool" "day$day" "$bytes" "$logs/day$day.time" "$repo"
    done

    last_day=${#dumps[@]}
    last_dump=${dumps[last_day - 1]}
    bytes=$(stat -c %s "$last_dump")
    set_restore_argv "$tool" "$last_day"
    /usr/bin/time -v -o "$logs/restore.time" "${restore_argv[@]}" >/dev/null 2>"$logs/restore.log"
    record_step "$logs/rows.tsv" "$run" "$tool" restore "$bytes" "$logs/restore.time" "$repo"

    if ((verify && run == 1)); then
        if "${restore_argv[@]}" 2>>"$logs/restore.log" | cmp -s - "$last_dump"; then
            log "$tool run $run: restored day $last_day is identical to $last_dump"
        else
            echo "compare.sh: $tool run $run: restored day $last_day differs from $last_dump (see $logs)" >&2
            return 1
        fi
    fi

    cat "$logs/rows.tsv" >>"$results"
    if ((!keep_repos)); then
        rm -rf "$repo" "$cache"
    fi
}

# ---------------------------------------------------------------------------
# Summary

# Print the comparison table from results.tsv. All figures are medians over
# runs, with min-max in brackets when there was more than one run.
print_summary() {
    local days=$1
    awk -F'\t' -v days="$days" '
        function sort_values(list, n,    i, j, v) {
            for (i = 2; i <= n; i++) {
                v = list[i]
                for (j = i - 1; j >= 1 && list[j] > v; j--) list[j + 1] = list[j]
                list[j + 1] = v
            }
        }
        function median(list, n) {
            sort_values(list, n)
            return n % 2 ? list[(n + 1) / 2] : (list[n / 2] + list[n / 2 + 1]) / 2
        }
        # Format the median over runs of values[tool, run], followed by
        # (min-max) when there are several runs.
        function across_runs(values, tool, format,    r, n, list, mid) {
            n = 0
            for (r = 1; r <= run_count[tool]; r++) {
                if ((tool SUBSEP run_id[tool, r]) in values) list[++n] = values[tool, run_id[tool, r]]
            }
            if (n == 0) return "-"
            mid = median(list, n)
            if (n == 1) return sprintf(format, mid)
            return sprintf(format " (" format "-" format ")", mid, list[1], list[n])
        }
        {
            run = $1; tool = $2; step = $3
            if (!((tool SUBSEP run) in seen)) {
                seen[tool, run] = 1
                run_id[tool, ++run_count[tool]] = run
                if (!(tool in tool_seen)) { tool_seen[tool] = 1; tools[++tool_count] = tool }
            }
            mbps = $4 / $5 / 1e6
            rss = $8 / 1024
            if (rss > peak[tool, run]) peak[tool, run] = rss
            if (step == "day1") {
                first[tool, run] = mbps
                first_cpu[tool, run] = $6 + $7
                first_size[tool, run] = $9 / $4 * 100
            } else if (step == "restore") {
                restore[tool, run] = mbps
            } else {
                day = substr(step, 4) + 0
                daily[tool, run, day] = mbps
                daily_cpu[tool, run, day] = $6 + $7
                growth[tool, run, day] = ($9 - repo_after[tool, run, day - 1]) / $4 * 100
            }
            if (step ~ /^day/) repo_after[tool, run, substr(step, 4) + 0] = $9
        }
        END {
            # Reduce days 2..N of each run to that run median.
            for (t = 1; t <= tool_count; t++) {
                tool = tools[t]
                for (r = 1; r <= run_count[tool]; r++) {
                    run = run_id[tool, r]
                    n = 0
                    for (d = 2; d <= days; d++) {
                        if ((tool SUBSEP run SUBSEP d) in daily) {
                            n++
                            a[n] = daily[tool, run, d]; b[n] = daily_cpu[tool, run, d]; c[n] = growth[tool, run, d]
                        }
                    }
                    if (n > 0) {
                        daily_run[tool, run] = median(a, n)
                        daily_cpu_run[tool, run] = median(b, n)
                        growth_run[tool, run] = median(c, n)
                    }
                }
            }
            printf "| tool | runs | first backup MB/s | daily backup MB/s | CPU s, first / daily | peak RSS MiB | repository after day 1, %% of dump | growth per day, %% of dump | restore MB/s |\n"
            printf "|---|---|---|---|---|---|---|---|---|\n"
            for (t = 1; t <= tool_count; t++) {
                tool = tools[t]
                printf "| %s | %d | %s | %s | %s / %s | %s | %s | %s | %s |\n", tool, run_count[tool],
                    across_runs(first, tool, "%.0f"), across_runs(daily_run, tool, "%.0f"),
                    across_runs(first_cpu, tool, "%.1f"), across_runs(daily_cpu_run, tool, "%.1f"),
                    across_runs(peak, tool, "%.0f"), across_runs(first_size, tool, "%.1f"),
                    across_runs(growth_run, tool, "%.2f"), across_runs(restore, tool, "%.0f")
            }
        }
    ' "$results"
}

# ---------------------------------------------------------------------------
# Main

if ((install)); then
    install_peers
fi

if [[ -z $cairn_bin ]]; then
    cairn_bin=$(command -v cairn || true)
fi

available=()
for tool in "${tools[@]}"; do
    if [[ $tool == cairn && -z $cairn_bin ]]; then
        echo "compare.sh: skipping cairn: not found on PATH (pass --cairn PATH or set CAIRN_BIN)" >&2
    elif ! command -v "$(tool_command "$tool")" >/dev/null 2>&1; then
        echo "compare.sh: skipping $tool: '$(tool_command "$tool")' is not installed (see --install)" >&2
    else
        available+=("$tool")
    fi
done
((${#available[@]} > 0)) || die "none of the selected tools is installed: ${tools[*]}"

if [[ -n $make_dumps_scale ]]; then
    make_dumps "$make_dumps_scale" "$make_dumps_days"
fi

rm -rf "$work_dir/repos" "$work_dir/caches" "$work_dir/logs"
mkdir -p "$work_dir/logs"
: >"$results"

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
        "$(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, Linux $(uname -r)"
    for tool in "${available[@]}"; do
        echo "$tool: $(tool_version "$tool")"
    done
    for dump in "${dumps[@]}"; do
        echo "dump: $dump, $(stat -c %s "$dump") bytes"
    done
} | tee "$work_dir/environment.txt"

# %.0f, because mawk prints large sums in exponent form, which bash arithmetic rejects.
total_bytes=$(stat -c %s "${dumps[@]}" | awk '{ s += $1 } END { printf "%.0f\n", s }')
available_bytes=$(awk '/^MemAvailable/ { printf "%.0f\n", $2 * 1024 }' /proc/meminfo)
if ((total_bytes > available_bytes)); then
    echo "compare.sh: the dumps ($total_bytes bytes) do not fit in available memory ($available_bytes bytes)," \
        "so backups will read from disk, not from the page cache" >&2
fi
log "reading the dumps into the page cache"
cat "${dumps[@]}" >/dev/null

failed=()
for ((run = 1; run <= runs; run++)); do
    # Rotate the tool order every run so that no tool always goes first.
    count=${#available[@]}
    for ((i = 0; i < count; i++)); do
        tool=${available[(i + run - 1) % count]}
        log "$tool run $run of $runs"
        set +e
        (set -e; run_sequence "$tool" "$run")
        status=$?
        set -e
        if ((status != 0)); then
            echo "compare.sh: $tool run $run failed (exit $status), logs in $work_dir/logs/$tool-run$run" >&2
            failed+=("$tool run $run")
        fi
    done
done

summary=$work_dir/summary.md
{
    echo
    echo "MB = 10^6 bytes. Throughput is dump bytes over the tool's wall time."
    if ((${#dumps[@]} > 1)); then
        echo "Daily backup, CPU daily and growth are medians of days 2..${#dumps[@]} within a run;"
    else
        echo "With a single dump, the daily columns are empty;"
    fi
    echo "every column is then the median over runs, with (min-max) when there were several."
    echo
    print_summary "${#dumps[@]}"
    if ((${#failed[@]})); then
        echo
        echo "Failed, not in the table: ${failed[*]}"
    fi
} | tee "$summary"
log "raw rows: $results; table: $summary; logs: $work_dir/logs"
if ((${#failed[@]})); then
    exit 1
fi
