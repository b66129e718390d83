//! Storage fault injection, for tests of how cairn handles a failing backend.
//!
//! `CAIRN_STORAGE_FAULTS` contains comma-separated rules `OP:PREFIX:NTH:KIND`:
//! OP is `read` or `write`; PREFIX selects object paths (`data/`, `index/`,
//! `snapshots/`, or `*` for all); NTH is the 1-based count of matching
//! operations that fails, or `*` for every one; KIND is `fail` (the
//! operation returns an error), `truncate` (a read returns, or a write
//! stores, only the first half of the bytes, and reports success) or
//! `delay` (the operation waits 200 ms). Without the variable, nothing is
//! injected and the check costs one branch per operation.

use std::sync::Mutex;
use std::time::Duration;

/// Effect of an injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// The operation fails with a storage error.
    Fail,
    /// Half of the bytes are read or written, and success is reported.
    Truncate,
    /// The operation is delayed by [`DELAY`].
    Delay,
}

/// Delay of a `delay` fault.
pub const DELAY: Duration = Duration::from_millis(200);

/// Kind of storage operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Whole or ranged reads.
    Read,
    /// Whole-object writes.
    Write,
}

#[derive(Debug)]
struct Rule {
    operation: Operation,
    prefix: String,
    nth: Option<u32>,
    kind: FaultKind,
}

/// The rules from `CAIRN_STORAGE_FAULTS` and how often each matched.
#[derive(Debug)]
pub struct FaultPlan {
    rules: Vec<Rule>,
    matches: Mutex<Vec<u32>>,
}

impl FaultPlan {
    /// Reads the plan from the environment; `None` when the variable is
    /// unset or empty. Malformed rules are reported and ignored.
    pub fn from_env() -> Option<FaultPlan> {
        let spec = std::env::var("CAIRN_STORAGE_FAULTS").ok()?;
        let rules: Vec<Rule> = spec
            .split(',')
            .filter(|rule| !rule.trim().is_empty())
            .filter_map(|rule| {
                let parsed = parse_rule(rule.trim());
                if parsed.is_none() {
                    tracing::warn!(rule, "ignoring malformed CAIRN_STORAGE_FAULTS rule");
                }
                parsed
            })
            .collect();
        if rules.is_empty() {
            return None;
        }
        tracing::warn!(
            rules = rules.len(),
            "storage fault injection is on (CAIRN_STORAGE_FAULTS)"
        );
        let matches = Mutex::new(vec![0; rules.len()]);
        Some(FaultPlan { rules, matches })
    }

    /// Returns the fault to inject into this operation, if any.
    pub fn check(&self, operation: Operation, path: &str) -> Option<FaultKind> {
        let mut matches = self.matches.lock().ok()?;
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.operation != operation
                || !(rule.prefix == "*" || path.starts_with(&rule.prefix))
            {
                continue;
            }
            matches[i] += 1;
            if rule.nth.is_none_or(|nth| nth == matches[i]) {
                return Some(rule.kind);
            }
        }
        None
    }
}

fn parse_rule(rule: &str) -> Option<Rule> {
    let mut parts = rule.split(':');
    let operation = match parts.next()? {
        "read" => Operation::Read,
        "write" => Operation::Write,
        _ => return None,
    };
    let prefix = parts.next()?.to_string();
    let nth = match parts.next()? {
        "*" => None,
        count => Some(count.parse().ok()?),
    };
    let kind = match parts.next()? {
        "fail" => FaultKind::Fail,
        "truncate" => FaultKind::Truncate,
        "delay" => FaultKind::Delay,
        _ => return None,
    };
    parts.next().is_none().then_some(Rule {
        operation,
        prefix,
        nth,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_matching_operation_faults() {
        let plan = FaultPlan {
            rules: vec![parse_rule("write:data/:2:fail").expect("valid rule")],
            matches: Mutex::new(vec![0]),
        };
        assert_eq!(plan.check(Operation::Write, "index/a"), None);
        assert_eq!(plan.check(Operation::Write, "data/ab/1"), None);
        assert_eq!(plan.check(Operation::Read, "data/ab/1"), None);
        assert_eq!(
            plan.check(Operation::Write, "data/ab/2"),
            Some(FaultKind::Fail)
        );
        assert_eq!(plan.check(Operation::Write, "data/ab/3"), None);
    }

    #[test]
    fn malformed_rules_are_rejected() {
        for rule in [
            "write",
            "write:data/:x:fail",
            "erase:data/:1:fail",
            "read:*:1:explode",
            "read:*:1:fail:extra",
        ] {
            assert!(parse_rule(rule).is_none(), "{rule} was accepted");
        }
        assert!(parse_rule("read:*:*:delay").is_some());
    }
}
