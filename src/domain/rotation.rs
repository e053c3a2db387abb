//! A rule's round robin as written: its members and weights, who is away when, its caps, what happens when
//! everyone is capped, and whether an absent member catches up. [`Rotation::turn`] is the one place a turn is
//! taken from the stored [`Standings`]; the embedded store calls it inside its transaction, and
//! `enqueue.lua` ports it for Redis (the standings must change in the same atomic step as the store).

use std::sync::Arc;

use super::availability::{Absence, Availability};
use super::clock::Millis;
use super::pick::{Caps, Member, Pick, Skipped, Standings, When, pick};
use crate::event::{LocationId, UserId};

/// A round robin, compiled from a rule's `then`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The rule's name: standings are kept per rule and location.
    pub rule: Arc<str>,
    /// In the team's order (ties go to the member listed first), each with their weight.
    pub members: Vec<Member>,
    pub availability: Arc<Availability>,
    /// An away member keeps gaining standing, and gets the picks they missed once back.
    pub catch_up: bool,
    pub caps: Caps,
    /// Who is added when every member is at their cap; `None`: the turn is dead-lettered.
    pub overflow: Option<UserId>,
}

/// The key a rule's round robin keeps its standings under in `location`.
pub fn key(rule: &str, location: &LocationId) -> String {
    format!("{rule}\u{1f}{location}")
}

/// What a turn gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Turn {
    /// A member was picked; the standings were updated.
    Picked { user: UserId, everyone_away: bool },
    /// Every member is at their cap: the overflow user is added (the standings are unchanged).
    Overflow(UserId),
    /// Every member is at their cap and there is no overflow: nobody is added, and the turn is set aside as a
    /// dead letter; replaying it adds `anyway`, whom the pick would choose without caps.
    Refused { anyway: UserId },
}

impl Turn {
    /// The note the stored operation carries to the audit trail, if any.
    pub fn note(&self, rotation: &Rotation) -> Option<String> {
        match self {
            Self::Picked { everyone_away: false, .. } => None,
            Self::Picked { everyone_away: true, .. } => {
                Some(format!("round robin `{}`: every member was away; picked anyway", rotation.rule))
            }
            Self::Overflow(_) => Some(format!("round robin `{}`: every member at their cap; overflow", rotation.rule)),
            Self::Refused { .. } => Some(format!(
                "round robin `{}`: every member was at their cap; replayed by hand, over the cap",
                rotation.rule
            )),
        }
    }
}

impl Rotation {
    /// Whether `user` is away at `now`.
    pub fn is_away(&self, user: &UserId, now: Millis) -> bool {
        self.availability.is_away(user, now)
    }

    /// The key its standings are kept under in `location`: one per rule and location, so each sub-account
    /// rotates on its own.
    pub fn key(&self, location: &LocationId) -> String {
        key(&self.rule, location)
    }

    /// Takes a turn at `now` from `standings` (updated only when a member is picked). `None` for an empty
    /// team, which the rules never compile.
    pub fn turn(&self, standings: &mut Standings, now: Millis) -> Option<Turn> {
        let first = self.members.first()?;
        let away = |user: &UserId| self.is_away(user, now);
        match pick(&self.members, standings, away, self.caps, self.catch_up, When::at(now)) {
            Pick::Picked { user, everyone_away, .. } => Some(Turn::Picked { user, everyone_away }),
            Pick::AllAtCap => Some(match &self.overflow {
                Some(user) => Turn::Overflow(user.clone()),
                None => {
                    // Who it would have been without caps, on a copy: the standings stay as they were.
                    let mut copy = standings.clone();
                    let uncapped = pick(&self.members, &mut copy, away, Caps::default(), self.catch_up, When::at(now));
                    let anyway = match uncapped {
                        Pick::Picked { user, .. } => user,
                        Pick::AllAtCap => first.user.clone(),
                    };
                    Turn::Refused { anyway }
                }
            }),
        }
    }

    /// Why a turn taken at `now` from `standings` goes where it goes (`rules explain`): who is picked, and why
    /// each other member is not. The standings are not changed.
    pub fn why(&self, standings: &Standings, now: Millis) -> String {
        let mut copy = standings.clone();
        let away = |user: &UserId| self.is_away(user, now);
        match pick(&self.members, &mut copy, away, self.caps, self.catch_up, When::at(now)) {
            Pick::Picked { user, everyone_away, skipped } => {
                let mut parts = vec![if everyone_away {
                    format!("{user} picked: nobody under their cap is at work now, so the turn goes ahead anyway")
                } else {
                    format!("{user} picked: furthest behind their weighted share")
                }];
                for (other, reason) in skipped {
                    let reason = match (reason, self.availability.absence(&other, now)) {
                        (Skipped::AtCap, _) => "at their cap".to_owned(),
                        (Skipped::Away, Some(Absence::OffHours)) => "outside their working hours".to_owned(),
                        (Skipped::Away, _) => "away today".to_owned(),
                        (Skipped::NotTheirTurn, _) => "not their turn".to_owned(),
                    };
                    parts.push(format!("{other} {reason}"));
                }
                parts.join("; ")
            }
            Pick::AllAtCap => match &self.overflow {
                Some(user) => format!("every member is at their cap: {user} (overflow) is added"),
                None => "every member is at their cap: the turn is set aside as a dead letter".to_owned(),
            },
        }
    }

    /// Why a refused turn was set aside, as its dead letter says.
    pub fn refusal(&self) -> String {
        let mut caps = Vec::new();
        if let Some(n) = self.caps.per_day {
            caps.push(format!("max_per_day = {n}"));
        }
        if let Some(n) = self.caps.per_week {
            caps.push(format!("max_per_week = {n}"));
        }
        format!(
            "round robin `{}`: every member is at their cap ({}) and the rule has no overflow",
            self.rule,
            caps.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation(overflow: Option<&str>) -> Rotation {
        Rotation {
            rule: Arc::from("leads"),
            members: ["a", "b"].iter().map(|u| Member { user: UserId::parse(u).unwrap(), weight: 1 }).collect(),
            availability: Arc::default(),
            catch_up: false,
            caps: Caps { per_day: Some(1), per_week: None },
            overflow: overflow.map(|u| UserId::parse(u).unwrap()),
        }
    }

    #[test]
    fn once_everyone_is_capped_a_turn_goes_to_the_overflow_or_is_refused_leaving_the_standings_as_they_were() {
        let user = |u: &str| UserId::parse(u).unwrap();
        for overflow in [Some("boss"), None] {
            let rotation = rotation(overflow);
            let mut standings = Standings::default();
            let turns: Vec<_> = (0..2).map(|_| rotation.turn(&mut standings, 0).unwrap()).collect();
            assert!(turns.iter().all(|t| matches!(t, Turn::Picked { everyone_away: false, .. })), "{turns:?}");
            let before = standings.clone();
            let third = rotation.turn(&mut standings, 0).unwrap();
            assert_eq!(standings, before, "a capped turn changes no standing");
            match overflow {
                Some(_) => assert_eq!(third, Turn::Overflow(user("boss"))),
                // a, capped for b's turn, took no part in it: uncapped, it would be b's turn again.
                None => assert_eq!(third, Turn::Refused { anyway: user("b") }),
            }
            assert!(third.note(&rotation).is_some());
        }
        assert!(rotation(None).refusal().contains("max_per_day = 1"), "{}", rotation(None).refusal());
    }

    #[test]
    fn why_names_who_is_picked_and_why_each_other_member_is_not() {
        let user = |u: &str| UserId::parse(u).unwrap();
        let mut availability = Availability::default();
        availability.add(user("b"), (0, 0));
        let members = ["a", "b", "c"].iter().map(|u| Member { user: user(u), weight: 1 }).collect();
        let rotation = Rotation { members, availability: Arc::new(availability), ..rotation(None) };
        let mut standings = Standings::default();
        let why = rotation.why(&standings, 0);
        assert_eq!(why, "a picked: furthest behind their weighted share; b away today; c not their turn");
        assert_eq!(standings, Standings::default(), "explaining takes no turn");
        rotation.turn(&mut standings, 0);
        assert_eq!(
            rotation.why(&standings, 0),
            "c picked: furthest behind their weighted share; a at their cap; b away today"
        );
        rotation.turn(&mut standings, 0);
        let why = rotation.why(&standings, 0);
        assert_eq!(
            why,
            "b picked: nobody under their cap is at work now, so the turn goes ahead anyway; a at their cap; c at their cap"
        );
        rotation.turn(&mut standings, 0);
        assert_eq!(rotation.why(&standings, 0), "every member is at their cap: the turn is set aside as a dead letter");
    }
}
