//! Progress bars on a terminal; nothing otherwise.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_core::backup::Progress;
use cairn_core::check::CheckProgress;
use cairn_core::restore::RestoreProgress;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Draws a bar on stderr when it is a terminal and JSON output is off.
pub struct Bar {
    bar: ProgressBar,
    stored: AtomicU64,
}

impl Bar {
    /// Creates a byte counter with a free-form message.
    pub fn new(json: bool, total: Option<u64>, template: &str) -> Bar {
        let visible = !json && std::io::stderr().is_terminal();
        let bar = match total {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::no_length(),
        };
        bar.set_draw_target(if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        Bar {
            bar,
            stored: AtomicU64::new(0),
        }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn read(&self, n: u64) {
        self.bar.inc(n);
    }

    fn stored(&self, n: u64) {
        let total = self.stored.fetch_add(n, Ordering::Relaxed) + n;
        self.bar
            .set_message(format!("new data stored {}", HumanBytes(total)));
    }
}

impl RestoreProgress for Bar {
    fn written(&self, n: u64) {
        self.bar.inc(n);
    }
}

impl CheckProgress for Bar {
    fn pack_done(&self, bytes: u64) {
        self.bar.inc(bytes);
    }
}
