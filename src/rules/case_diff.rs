//! Judging a rule test case: the operations a payload actually led to, as lines ([`OpLines`]), compared with
//! the case's expected lines ([`compare`]), and a diff a person can read when they differ.
//!
//! This is pure: running the payload (parse, resolve against a throwaway store, plan) is the command's job,
//! so the check here cannot drift from what `followd rules test` prints.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::Action;
use super::cases::{Case, normalize_op};
use crate::domain::pick::{Standing, Standings, When};
use crate::domain::rotation::Turn;
use crate::event::{LocationId, UserId};

/// How one case went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseOutcome {
    pub name: String,
    pub file: PathBuf,
    /// The line of the case's name in `file`.
    pub line: usize,
    pub passed: bool,
    /// Empty when passed; otherwise expected and actual lines, `-` for expected only, `+` for actual only,
    /// or the reason the payload could not be run.
    pub diff: String,
}

impl fmt::Display for CaseOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed {
            write!(f, "ok    {}", self.name)
        } else {
            write!(f, "FAIL  {} ({}:{})", self.name, self.file.display(), self.line)?;
            for line in self.diff.lines() {
                write!(f, "\n      {line}")?;
            }
            Ok(())
        }
    }
}

impl CaseOutcome {
    /// A case whose payload could not be run (it does not parse, say); `reason` says why.
    pub fn failed(case: &Case, reason: &dyn fmt::Display) -> Self {
        Self { passed: false, diff: reason.to_string(), ..Self::passed(case) }
    }

    fn passed(case: &Case) -> Self {
        Self { name: case.name.clone(), file: case.file.clone(), line: case.line, passed: true, diff: String::new() }
    }
}

/// Compares the operations a case's payload led to (`actual`, lines as [`OpLines`] writes them) with what the
/// case expects. White space inside a line does not matter; order does.
pub fn compare(case: &Case, actual: &[String]) -> CaseOutcome {
    let actual: Vec<String> =
        actual.iter().map(|line| normalize_op(line).unwrap_or_else(|_| line.trim().to_owned())).collect();
    if actual == case.expect {
        return CaseOutcome::passed(case);
    }
    let mut diff = String::from("expected (-) and actual (+) operations:");
    for (mark, line) in lines_diff(&case.expect, &actual) {
        diff.push_str(&format!("\n{mark} {line}"));
    }
    CaseOutcome::failed(case, &diff)
}

/// The two lists as one, each line marked ' ' (in both), '-' (expected only) or '+' (actual only), along a
/// longest common subsequence so a single wrong line shows as one `-` and one `+`. Lists are a few lines
/// long, so the quadratic table is fine.
fn lines_diff<'a>(expected: &'a [String], actual: &'a [String]) -> Vec<(char, &'a str)> {
    let (n, m) = (expected.len(), actual.len());
    // common[i][j]: length of the longest common subsequence of expected[i..] and actual[j..].
    let mut common = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            common[i][j] = if expected[i] == actual[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(n + m);
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            out.push((' ', expected[i].as_str()));
            (i, j) = (i + 1, j + 1);
        } else if i < n && (j == m || common[i + 1][j] >= common[i][j + 1]) {
            // On a tie the expected line goes first, so a replaced line reads `-` then `+`, as in a diff.
            out.push(('-', expected[i].as_str()));
            i += 1;
        } else {
            out.push(('+', actual[j].as_str()));
            j += 1;
        }
    }
    out
}

/// Turns planned actions into the lines case files expect: `remove_all`, `remove <user>`, `add <user>`, and
/// `dead_letter` for a round robin's turn refused because every member is at their cap.
///
/// A round robin is resolved as a fresh store resolves it (with the picks a case says were already made
/// today and this week): each (rule, location) starts level, so a case that fires the same equal-weight
/// round robin twice in one location expects the first member, then the second. Feed the actions in the
/// order the queue would store them.
#[derive(Debug, Default)]
pub struct OpLines {
    /// Each round robin's standings, as a fresh store would hold them.
    standings: HashMap<(Arc<str>, LocationId), Standings>,
    /// When the picks happen (who is away is decided then); 0 before [`OpLines::at`] sets it.
    now: crate::domain::clock::Millis,
    /// Picks each user already had today and this week, in every round robin (a case's `picked_today`,
    /// `picked_this_week`).
    picked: BTreeMap<UserId, (u32, u32)>,
    lines: Vec<String>,
    /// Why each round robin picked whom it picked, in order (`rules explain`).
    reasons: Vec<String>,
}

impl OpLines {
    /// Lines for events that happen at `now` (ms since the epoch).
    pub fn at(now: crate::domain::clock::Millis) -> Self {
        Self { now, ..Self::default() }
    }

    /// Lines for `case`: at its time (else `now`), with the picks it says were already made.
    pub fn for_case(case: &super::Case, now: crate::domain::clock::Millis) -> Self {
        let mut picked: BTreeMap<UserId, (u32, u32)> = BTreeMap::new();
        for (user, &n) in &case.picked_today {
            picked.entry(user.clone()).or_default().0 = n;
        }
        for (user, &n) in &case.picked_this_week {
            picked.entry(user.clone()).or_default().1 = n;
        }
        Self { now: case.at.unwrap_or(now), picked, ..Self::default() }
    }

    /// A fresh store's standings for `rotation`, holding the picks already made.
    fn fresh(&self, rotation: &crate::domain::rotation::Rotation) -> Standings {
        let when = When::at(self.now);
        let mut standings = Standings::default();
        for member in &rotation.members {
            if let Some(&(today, week)) = self.picked.get(&member.user) {
                let standing =
                    Standing { day: when.day, today, week: when.week, this_week: week.max(today), credit: 0 };
                standings.members.insert(member.user.clone(), standing);
            }
        }
        standings
    }

    /// Adds the line(s) for one planned action of an event in `location`.
    pub fn push(&mut self, location: &LocationId, action: &Action) {
        let line = match action {
            Action::RemoveAll => "remove_all".to_owned(),
            Action::Remove(user) => format!("remove {user}"),
            Action::Add(user) => format!("add {user}"),
            Action::RoundRobin(rotation) => {
                let fresh = self.fresh(rotation);
                let standings = self.standings.entry((Arc::clone(&rotation.rule), location.clone())).or_insert(fresh);
                self.reasons.push(format!("round robin `{}`: {}", rotation.rule, rotation.why(standings, self.now)));
                // An empty pool never compiles; skipping it here mirrors the queue, which stores nothing.
                match rotation.turn(standings, self.now) {
                    Some(Turn::Picked { user, .. } | Turn::Overflow(user)) => format!("add {user}"),
                    Some(Turn::Refused { .. }) => "dead_letter".to_owned(),
                    None => return,
                }
            }
        };
        self.lines.push(line);
    }

    /// Adds the line(s) for one planned action queued for `contact`: an opportunity's read
    /// `opportunity <id>: add usr_...`.
    pub fn push_for(&mut self, contact: &crate::event::ContactKey, action: &Action) {
        let before = self.lines.len();
        self.push(&contact.location_id, action);
        if let Some(opportunity) = contact.contact_id.as_opportunity() {
            for line in &mut self.lines[before..] {
                *line = format!("opportunity {opportunity}: {line}");
            }
        }
    }

    /// Later picks happen at `now` (a case's next step).
    pub fn set_now(&mut self, now: crate::domain::clock::Millis) {
        self.now = now;
    }

    /// Adds a line as it is (a step's heading, the cover's changes).
    pub fn note(&mut self, line: String) {
        self.lines.push(line);
    }

    /// The lines so far.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Why each round robin's turn went where it went, in the order pushed.
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }

    /// The lines, in the order pushed.
    pub fn into_lines(self) -> Vec<String> {
        self.lines
    }
}
