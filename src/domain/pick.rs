//! A round robin's pick: weighted, capped, aware of who is away, and fair when the team changes.
//!
//! This is the arithmetic only, pure and deterministic (issue 16's first part; the stores and the rule syntax
//! build on it). It is smooth weighted round robin: each member holds a *credit*; at each pick every member
//! who takes part gains their weight, the one with the most credit is picked and pays back the weight handed
//! out in that round. Over any run of picks a member's count stays within one pick of their weighted share,
//! and the picks interleave (2:1 gives a a b a a b, not a a a … b b b).
//!
//! Fairness across change follows from what the credit is: how far a member is behind their share. A member
//! who joins starts at 0 (level), so they get their share from then on and not every next lead; one who
//! leaves takes their credit with them and the others' stay as they were. A member who is away, or at their
//! cap, takes no part in a round: they neither gain nor pay, so they come back level and do not catch up with
//! a flood; with `catch_up` they keep gaining while away, and get the picks they missed once back.
//!
//! When everyone is away the pick goes ahead among everyone not at their cap (as the routers do) and says so;
//! when everyone is at their cap there is no pick.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::UserId;

/// A member of a round robin, with their weight (picks per round relative to the others; at least 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user: UserId,
    pub weight: u32,
}

/// Per-member limits (`max_per_day`, `max_per_week`); `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    pub per_day: Option<u32>,
    pub per_week: Option<u32>,
}

/// What one member's record holds between picks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    /// How far behind (positive) or ahead of their weighted share the member is, in weight units.
    pub credit: i64,
    /// The day (days since the epoch, in the rule's time zone) `today` counts, and the picks on it.
    pub day: u64,
    pub today: u32,
    /// The week (weeks since the epoch) `this_week` counts, and the picks in it.
    pub week: u64,
    pub this_week: u32,
}

impl Standing {
    fn picks_today(&self, day: u64) -> u32 {
        if self.day == day { self.today } else { 0 }
    }

    fn picks_this_week(&self, week: u64) -> u32 {
        if self.week == week { self.this_week } else { 0 }
    }

    fn at_cap(&self, caps: Caps, day: u64, week: u64) -> bool {
        caps.per_day.is_some_and(|cap| self.picks_today(day) >= cap)
            || caps.per_week.is_some_and(|cap| self.picks_this_week(week) >= cap)
    }
}

/// A round robin's records: each member's, and the team's total weight they were counted under.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standings {
    /// The sum of the weights when the credits were last settled; 0 before the first pick.
    pub team_weight: i64,
    pub members: BTreeMap<UserId, Standing>,
}

/// Why a member was not picked (for `rules explain` and the audit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    Away,
    AtCap,
    /// Available, but another member was further behind their share.
    NotTheirTurn,
}

/// The moment of a pick, as the caps count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct When {
    pub day: u64,
    pub week: u64,
}

impl When {
    /// The UTC day and week of `now` (ms since the epoch); weeks start on Monday.
    pub fn at(now: crate::domain::clock::Millis) -> Self {
        let day = now / 86_400_000;
        // 1970-01-01 was a Thursday: shift by 3 days so weeks begin on Mondays.
        Self { day, week: (day + 3) / 7 }
    }
}

/// What a pick decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    Picked {
        user: UserId,
        /// Every member was away: the pick went ahead among those not at their cap.
        everyone_away: bool,
        skipped: Vec<(UserId, Skipped)>,
    },
    /// Every member is at their cap.
    AllAtCap,
}

/// Brings the records in line with the team as it is now. Who left is forgotten and the credit they held is
/// spread over who stays, so the credits again sum to 0 and nobody's place relative to the others changes (a
/// departure resets nobody). A credit is "picks behind" times the team's weight, so when that weight changes
/// (someone joined, left or was reweighted) every credit is rescaled to it: a member keeps the lag in picks
/// they had.
fn settle(members: &[Member], standings: &mut Standings) {
    let weight: i64 = members.iter().map(|m| i64::from(m.weight.max(1))).sum();
    let records = &mut standings.members;
    records.retain(|user, _| members.iter().any(|m| m.user == *user));
    if standings.team_weight > 0 && standings.team_weight != weight {
        for record in records.values_mut() {
            let scaled = (record.credit as f64) * (weight as f64) / (standings.team_weight as f64);
            record.credit = scaled.round() as i64;
        }
    }
    standings.team_weight = weight;
    let sum: i64 = records.values().map(|r| r.credit).sum();
    let Ok(n) = i64::try_from(members.len()) else { return };
    if sum == 0 || n == 0 {
        return;
    }
    let (each, rest) = (sum.div_euclid(n), sum.rem_euclid(n));
    for (i, member) in members.iter().enumerate() {
        let share = each + i64::from(i64::try_from(i).is_ok_and(|i| i < rest));
        records.entry(member.user.clone()).or_default().credit -= share;
    }
}

/// Picks one member and updates `standings` (only when someone is picked). `away` says who is away now.
pub fn pick(
    members: &[Member],
    standings: &mut Standings,
    away: impl Fn(&UserId) -> bool,
    caps: Caps,
    catch_up: bool,
    when: When,
) -> Pick {
    settle(members, standings);
    let capped = |m: &Member, s: &Standings| {
        s.members.get(&m.user).copied().unwrap_or_default().at_cap(caps, when.day, when.week)
    };
    let open: Vec<&Member> = members.iter().filter(|m| !capped(m, standings)).collect();
    if open.is_empty() {
        return Pick::AllAtCap;
    }
    let present: Vec<&Member> = open.iter().copied().filter(|m| !away(&m.user)).collect();
    let everyone_away = present.is_empty();
    let eligible = if everyone_away { open } else { present };
    // Who gains their weight this round: the eligible; with catch_up, also who is away (not who is capped).
    let gaining: Vec<&Member> = if catch_up {
        members.iter().filter(|m| eligible.contains(m) || (away(&m.user) && !capped(m, standings))).collect()
    } else {
        eligible.clone()
    };
    let handed_out: i64 = gaining.iter().map(|m| i64::from(m.weight.max(1))).sum();
    for member in &gaining {
        standings.members.entry(member.user.clone()).or_default().credit += i64::from(member.weight.max(1));
    }
    // Most credit wins; ties go to the member listed first.
    let mut chosen = eligible[0];
    for member in &eligible[1..] {
        if credit(standings, &member.user) > credit(standings, &chosen.user) {
            chosen = member;
        }
    }
    let record = standings.members.entry(chosen.user.clone()).or_default();
    record.credit -= handed_out;
    record.today = record.picks_today(when.day) + 1;
    record.day = when.day;
    record.this_week = record.picks_this_week(when.week) + 1;
    record.week = when.week;
    let skipped = members
        .iter()
        .filter(|m| m.user != chosen.user)
        .map(|m| {
            let why = if capped(m, standings) {
                Skipped::AtCap
            } else if away(&m.user) && !everyone_away {
                Skipped::Away
            } else {
                Skipped::NotTheirTurn
            };
            (m.user.clone(), why)
        })
        .collect();
    Pick::Picked { user: chosen.user.clone(), everyone_away, skipped }
}

/// Gives back a turn `user` was picked for at `when` but did not get (its rule skipped the contact at delivery):
/// their count for that day and week goes down by one, and they regain one pick's worth of credit (the team's
/// weight), which the next pick's settling spreads back over the team. An exact undo when every member took
/// part in that turn and no pick came between; otherwise close to one.
pub fn refund(standings: &mut Standings, user: &UserId, when: When) {
    let team_weight = standings.team_weight;
    let Some(record) = standings.members.get_mut(user) else { return };
    record.credit += team_weight;
    if record.day == when.day {
        record.today = record.today.saturating_sub(1);
    }
    if record.week == when.week {
        record.this_week = record.this_week.saturating_sub(1);
    }
}

fn credit(standings: &Standings, user: &UserId) -> i64 {
    standings.members.get(user).map_or(0, |s| s.credit)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    const NOW: When = When { day: 20_000, week: 2_857 };

    fn team(weights: &[u32]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Member { user: UserId::parse(&format!("u{i}")).unwrap(), weight })
            .collect()
    }

    fn run(members: &[Member], standings: &mut Standings, picks: usize, away: &BTreeSet<usize>) -> Vec<usize> {
        let mut counts = vec![0; members.len()];
        for _ in 0..picks {
            let is_away = |u: &UserId| away.iter().any(|&i| members[i].user == *u);
            if let Pick::Picked { user, .. } = pick(members, standings, is_away, Caps::default(), false, NOW) {
                counts[members.iter().position(|m| m.user == user).unwrap()] += 1;
            }
        }
        counts
    }

    #[test]
    fn two_to_one_interleaves() {
        let members = team(&[2, 1]);
        let mut standings = Standings::default();
        let order: Vec<String> = (0..6)
            .map(|_| match pick(&members, &mut standings, |_| false, Caps::default(), false, NOW) {
                Pick::Picked { user, .. } => user.to_string(),
                Pick::AllAtCap => "-".into(),
            })
            .collect();
        assert_eq!(order, ["u0", "u1", "u0", "u0", "u1", "u0"]);
    }

    #[test]
    fn a_member_at_the_daily_cap_is_skipped_until_the_next_day_and_all_capped_picks_nobody() {
        let members = team(&[1, 1]);
        let caps = Caps { per_day: Some(1), per_week: None };
        let mut standings = Standings::default();
        let first = pick(&members, &mut standings, |_| false, caps, false, NOW);
        let second = pick(&members, &mut standings, |_| false, caps, false, NOW);
        let (Pick::Picked { user: a, .. }, Pick::Picked { user: b, skipped, .. }) = (first, second) else { panic!() };
        assert_ne!(a, b);
        assert_eq!(skipped, vec![(a.clone(), Skipped::AtCap)]);
        assert_eq!(pick(&members, &mut standings, |_| false, caps, false, NOW), Pick::AllAtCap);
        let tomorrow = When { day: NOW.day + 1, ..NOW };
        assert!(matches!(pick(&members, &mut standings, |_| false, caps, false, tomorrow), Pick::Picked { .. }));
    }

    #[test]
    fn when_everyone_is_away_the_pick_goes_ahead_and_says_so() {
        let members = team(&[1, 1]);
        let mut standings = Standings::default();
        let picked = pick(&members, &mut standings, |_| true, Caps::default(), false, NOW);
        assert!(matches!(picked, Pick::Picked { everyone_away: true, .. }), "{picked:?}");
    }

    #[test]
    fn a_member_back_from_an_absence_comes_back_level_unless_catch_up() {
        for catch_up in [false, true] {
            let members = team(&[1, 1]);
            let mut standings = Standings::default();
            let away_u1 = |u: &UserId| u.as_str() == "u1";
            for _ in 0..10 {
                pick(&members, &mut standings, away_u1, Caps::default(), catch_up, NOW);
            }
            let back: Vec<String> = (0..6)
                .map(|_| match pick(&members, &mut standings, |_| false, Caps::default(), catch_up, NOW) {
                    Pick::Picked { user, .. } => user.to_string(),
                    Pick::AllAtCap => "-".into(),
                })
                .collect();
            let u1 = back.iter().filter(|u| *u == "u1").count();
            if catch_up {
                assert_eq!(u1, 6, "catching up: {back:?}");
            } else {
                assert_eq!(u1, 3, "level: {back:?}");
            }
        }
    }

    #[test]
    fn a_refunded_turn_is_given_back_and_the_same_member_is_picked_again() {
        let members = team(&[2, 1, 1]);
        let mut standings = Standings::default();
        for _ in 0..5 {
            pick(&members, &mut standings, |_| false, Caps::default(), false, NOW);
        }
        let before = standings.clone();
        let Pick::Picked { user, .. } = pick(&members, &mut standings, |_| false, Caps::default(), false, NOW) else {
            panic!()
        };
        refund(&mut standings, &user, NOW);
        let Pick::Picked { user: again, .. } = pick(&members, &mut standings, |_| false, Caps::default(), false, NOW)
        else {
            panic!()
        };
        assert_eq!(again, user, "the turn went back to them");
        let record = |s: &Standings| s.members[&user].today;
        assert_eq!(record(&standings), record(&before) + 1, "counted once, not twice");
    }

    proptest! {
        #[test]
        fn every_member_stays_within_one_pick_of_their_weighted_share(
            weights in prop::collection::vec(1u32..6, 1..7),
            picks in 1usize..300,
        ) {
            let members = team(&weights);
            let mut standings = Standings::default();
            let counts = run(&members, &mut standings, picks, &BTreeSet::new());
            let total: u32 = weights.iter().sum();
            for (i, &count) in counts.iter().enumerate() {
                let share = picks as f64 * f64::from(weights[i]) / f64::from(total);
                prop_assert!((count as f64 - share).abs() < 1.0 + 1e-9, "member {i}: {count} vs {share:.2} ({weights:?})");
            }
        }

        #[test]
        fn an_away_or_capped_member_is_never_picked_while_another_can_be(
            weights in prop::collection::vec(1u32..6, 2..7),
            away in prop::collection::btree_set(0usize..6, 0..5),
            cap in 1u32..4,
            picks in 1usize..60,
        ) {
            let members = team(&weights);
            let caps = Caps { per_day: Some(cap), per_week: None };
            let mut standings = Standings::default();
            let is_away = |u: &UserId| away.iter().any(|&i| members.get(i).is_some_and(|m| m.user == *u));
            for _ in 0..picks {
                let before = standings.clone();
                let capped = |m: &Member| before.members.get(&m.user).is_some_and(|s| s.at_cap(caps, NOW.day, NOW.week));
                match pick(&members, &mut standings, is_away, caps, false, NOW) {
                    Pick::Picked { user, everyone_away, .. } => {
                        let member = members.iter().find(|m| m.user == user).unwrap();
                        prop_assert!(!capped(member), "{user} picked at the cap");
                        let someone_present = members.iter().any(|m| !capped(m) && !is_away(&m.user));
                        prop_assert_eq!(everyone_away, !someone_present);
                        prop_assert!(everyone_away || !is_away(&user), "{} picked while away", user);
                    }
                    Pick::AllAtCap => prop_assert!(members.iter().all(capped)),
                }
            }
        }

        #[test]
        fn a_member_added_or_removed_never_gives_anyone_more_than_their_share_plus_one(
            weights in prop::collection::vec(1u32..6, 2..6),
            before in 0usize..100,
            after in 1usize..200,
            remove in any::<bool>(),
        ) {
            // Each member's share accumulates pick by pick: their weight over the team's at that moment.
            let mut members = team(&weights);
            let mut standings = Standings::default();
            let mut shares: BTreeMap<UserId, f64> = BTreeMap::new();
            let mut counts: BTreeMap<UserId, usize> = BTreeMap::new();
            for i in 0..before + after {
                if i == before {
                    if remove {
                        members.remove(0);
                    } else {
                        members.push(Member { user: UserId::parse("newcomer").unwrap(), weight: 3 });
                    }
                }
                let total: u32 = members.iter().map(|m| m.weight).sum();
                for m in &members {
                    *shares.entry(m.user.clone()).or_default() += f64::from(m.weight) / f64::from(total);
                }
                if let Pick::Picked { user, .. } = pick(&members, &mut standings, |_| false, Caps::default(), false, NOW) {
                    *counts.entry(user).or_default() += 1;
                }
            }
            for m in &members {
                let (count, share) = (counts.get(&m.user).copied().unwrap_or(0), shares[&m.user]);
                prop_assert!(count as f64 <= share + 1.0 + 1e-9, "{}: {count} picks vs share {share:.2}", m.user);
            }
        }
    }
}
