//! Progress of a reconcile for the person who started it: a bar on a terminal (`indicatif`: contacts read of
//! the total, changes queued, rate, time left), a line on stderr every few seconds otherwise (logs, CI).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a line is written without a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// Shows a run's progress; silent when `quiet` (a service's scheduled run logs instead).
pub struct Progress {
    bar: Option<ProgressBar>,
    lines: bool,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        let terminal = !quiet && std::io::stderr().is_terminal();
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} {pos}/{len} contacts read  {msg}  {per_sec}  eta {eta}  [{bar:30}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        let now = Instant::now();
        Self { bar, lines: !quiet && !terminal, started: now, last_line: now }
    }

    /// After each page: contacts read so far, of `total` when the CRM said, and changes found or queued.
    pub fn update(&mut self, read: u64, total: Option<u64>, changes: u64) {
        if let Some(bar) = &self.bar {
            if let Some(total) = total {
                bar.set_length(total.max(read));
            }
            bar.set_position(read);
            bar.set_message(format!("{changes} changes"));
        } else if self.lines && self.last_line.elapsed() >= LINE_EVERY {
            self.last_line = Instant::now();
            let rate = read as f64 / self.started.elapsed().as_secs_f64().max(0.001);
            let left = total.filter(|t| *t > read && rate > 0.0).map(|t| (t - read) as f64 / rate);
            let left = left.map_or_else(String::new, |s| format!(", about {}s left", s.ceil()));
            eprintln!(
                "reconcile: {read}{} contacts read, {changes} changes, {rate:.0}/s{left}",
                total.map_or_else(String::new, |t| format!("/{t}"))
            );
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
