//! Progress bars on stderr (indicatif), drawn only when stderr is a
//! terminal: output captured by programs and tests never has them.

use std::io::IsTerminal;
use std::sync::OnceLock;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Byte counts below this finish before a bar would help.
const MIN_BYTES: u64 = 64 << 20;

/// Whether bars are drawn: only when stderr is a terminal.
pub fn shown() -> bool {
    std::io::stderr().is_terminal()
}

/// A bar of `len` steps on stderr (hidden unless [`shown`]), labelled
/// `label`, drawn by `template` (indicatif's placeholders).
fn bar(label: &str, len: u64, template: &str) -> ProgressBar {
    let target = if shown() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let style = ProgressStyle::with_template(template)
        .expect("a valid progress template")
        .progress_chars("# ");
    let bar = ProgressBar::with_draw_target(Some(len), target).with_style(style);
    bar.set_prefix(label.to_owned());
    bar
}

/// A reporter of `(done, total)` bytes for the library's progress
/// callbacks (writing, verifying): a bar labelled `verb` for work of
/// 64 MiB or more, left on screen when done.
pub fn bytes(verb: &'static str) -> impl Fn(u64, u64) + Send + Sync + 'static {
    let shown = OnceLock::new();
    move |done: u64, total: u64| {
        if total < MIN_BYTES {
            return;
        }
        let bar = shown.get_or_init(|| {
            bar(
                verb,
                total,
                "  {prefix} [{bar:30}] {percent:>3}% {binary_bytes} of {binary_total_bytes}",
            )
        });
        bar.set_length(total);
        bar.set_position(done.min(total));
        if done >= total {
            bar.finish();
        }
    }
}

/// A bar of `total` steps counted in `unit` (`batches`), labelled `label`
/// (`epoch 3`); `finish_and_clear` removes it.
pub fn steps(label: &str, total: u64, unit: &str) -> ProgressBar {
    let template = format!("  {{prefix}} [{{bar:24}}] {{pos}}/{{len}} {unit}");
    bar(label, total, &template)
}
