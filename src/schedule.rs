//! Which queued requests may start now, and in which order. Pure, so the rules can be tested
//! on their own.
//!
//! Order: round-robin between writers ([`Rounds`]): each writer's requests keep their arrival
//! order, and the writers take turns, so 50 requests from one writer do not put another's one
//! request 50th in line.
//!
//! Rules: `update` and `rollback` are exclusive: by default one at a time across all
//! components (they share one compose file), else one at a time per component. `health` runs
//! alongside others, but never on a component that is being updated or rolled back. Requests
//! that conflict keep their order: a request never overtakes an earlier one it conflicts with,
//! unless that one's writer already runs all it may. At most `max_concurrent` scripts run at
//! once, at most `max_running_per_writer` of them for one writer.

use std::collections::{HashMap, HashSet};

use crate::fairshare::Writer;
use crate::request::Action;

#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub serialize_updates: bool,
    pub max_concurrent: usize,
    pub max_running_per_writer: usize,
}

/// Round-robin between writers, as start-time fair queueing: a request gets a *round* when it
/// is due (accepted, or its `not_before` or window came), and requests are considered by
/// round, then in arrival order. A writer's requests take consecutive rounds, so in each round
/// every waiting writer has one; a writer with nothing waiting joins at the current round (the
/// round of the latest start), so it neither jumps ahead of those already waiting nor falls
/// behind a backlog that built up without it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rounds {
    current: u64,
}

impl Rounds {
    /// The round of a request that is due now, given the latest round of its writer's other
    /// waiting or running requests.
    pub fn join(&self, writers_latest: Option<u64>) -> u64 {
        writers_latest.map_or(self.current, |latest| (latest + 1).max(self.current))
    }

    /// A request of `round` started. The current round never goes back: a request may start
    /// out of turn (it conflicts with nothing ahead of it).
    pub fn started(&mut self, round: u64) {
        self.current = self.current.max(round);
    }
}

/// The order in which due requests are considered: `rounds` holds each one's round, in
/// arrival order; the result is indices into it, by round, then arrival.
pub fn fair_order(rounds: &[u64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rounds.len()).collect();
    order.sort_by_key(|&i| rounds[i]); // stable: arrival order within a round
    order
}

/// What the rules need to know of a request.
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    pub component: &'a str,
    pub action: Action,
    /// A multi-component update: it claims every component (and waits for all to be free).
    pub all_components: bool,
    pub writer: Writer,
}

#[derive(Default)]
struct Claims<'a> {
    /// A multi-component update runs or waits: nothing after it may start.
    all: bool,
    any_exclusive: bool,
    exclusive: HashSet<&'a str>,
    health: HashSet<&'a str>,
}

impl<'a> Claims<'a> {
    fn add(&mut self, slot: Slot<'a>) {
        if slot.all_components {
            self.all = true;
        }
        if slot.action.is_exclusive() {
            self.any_exclusive = true;
            self.exclusive.insert(slot.component);
        } else {
            self.health.insert(slot.component);
        }
    }

    fn blocks(&self, slot: Slot<'_>, rules: Rules) -> bool {
        if self.all {
            return true;
        }
        if slot.all_components {
            return self.any_exclusive || !self.health.is_empty();
        }
        if slot.action.is_exclusive() {
            (rules.serialize_updates && self.any_exclusive)
                || self.exclusive.contains(slot.component)
                || self.health.contains(slot.component)
        } else {
            self.exclusive.contains(slot.component)
        }
    }
}

/// Indices into `queued` (in [`fair_order`]) of the requests to start now, in order.
pub fn startable<'a>(
    running: impl IntoIterator<Item = Slot<'a>>,
    queued: impl IntoIterator<Item = Slot<'a>>,
    rules: Rules,
    component_count: usize,
) -> Vec<usize> {
    let mut claims = Claims::default();
    let mut busy = 0;
    let mut per_writer: HashMap<Writer, usize> = HashMap::new();
    for slot in running {
        claims.add(slot);
        busy += 1;
        *per_writer.entry(slot.writer).or_default() += 1;
    }
    let mut start = Vec::new();
    for (index, slot) in queued.into_iter().enumerate() {
        if busy >= rules.max_concurrent {
            break;
        }
        // Once every component has an exclusive claim, nothing further back can start; stop
        // here so a long backlog costs nothing per scheduling pass.
        if claims.all || (claims.exclusive.len() >= component_count && claims.any_exclusive) {
            break;
        }
        let writers_running = per_writer.entry(slot.writer).or_default();
        if *writers_running >= rules.max_running_per_writer {
            // Waits for one of its writer's own runs to end, and claims nothing meanwhile: a
            // writer that runs all it may cannot hold others up with what it queued next.
            continue;
        }
        if !claims.blocks(slot, rules) {
            start.push(index);
            busy += 1;
            *writers_running += 1;
        }
        claims.add(slot);
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    const SERIAL: Rules = Rules {
        serialize_updates: true,
        max_concurrent: 4,
        max_running_per_writer: 4,
    };

    const A: Writer = Writer {
        spool: 0,
        uid: 2001,
    };
    const B: Writer = Writer {
        spool: 0,
        uid: 2002,
    };

    fn s(component: &str, action: Action) -> Slot<'_> {
        by(A, component, action)
    }

    fn by(writer: Writer, component: &str, action: Action) -> Slot<'_> {
        Slot {
            component,
            action,
            all_components: false,
            writer,
        }
    }

    fn batch(first: &str) -> Slot<'_> {
        Slot {
            component: first,
            action: Update,
            all_components: true,
            writer: A,
        }
    }

    #[test]
    fn a_multi_component_update_runs_alone() {
        let parallel = Rules {
            serialize_updates: false,
            ..SERIAL
        };
        // It waits for a health check anywhere, and nothing behind it overtakes it.
        assert!(startable([s("core", Health)], [batch("remote")], parallel, 3).is_empty());
        assert!(
            startable(
                [s("core", Health)],
                [batch("remote"), s("core", Health)],
                parallel,
                3
            )
            .is_empty()
        );
        assert_eq!(
            startable([], [batch("remote"), s("core", Health)], parallel, 3),
            [0]
        );
        // While it runs, nothing else starts.
        assert!(startable([batch("remote")], [s("scheduler", Health)], parallel, 3).is_empty());
    }

    #[test]
    fn updates_are_serialized_across_components_by_default() {
        let q = [
            s("core", Update),
            s("remote", Update),
            s("scheduler", Health),
        ];
        assert_eq!(startable([], q, SERIAL, 3), [0, 2]);
        let parallel = Rules {
            serialize_updates: false,
            ..SERIAL
        };
        assert_eq!(startable([], q, parallel, 3), [0, 1, 2]);
    }

    #[test]
    fn health_never_runs_on_a_component_being_updated() {
        let running = [s("remote", Update)];
        let q = [s("remote", Health), s("core", Health), s("core", Health)];
        assert_eq!(startable(running, q, SERIAL, 3), [1, 2]);
    }

    #[test]
    fn an_update_waits_for_a_running_health_check_of_its_component() {
        assert!(startable([s("remote", Health)], [s("remote", Update)], SERIAL, 3).is_empty());
        assert_eq!(
            startable([s("core", Health)], [s("remote", Update)], SERIAL, 3),
            [0]
        );
    }

    #[test]
    fn conflicting_requests_keep_arrival_order() {
        // A health check queued behind an update of its component waits for that update.
        let q = [
            s("core", Update),
            s("remote", Rollback),
            s("remote", Health),
        ];
        assert_eq!(startable([], q, SERIAL, 3), [0]);
    }

    #[test]
    fn concurrency_is_capped() {
        let q = [s("a", Health), s("b", Health), s("c", Health)];
        let rules = Rules {
            max_concurrent: 2,
            ..SERIAL
        };
        assert_eq!(startable([], q, rules, 3), [0, 1]);
        assert_eq!(startable([s("x", Health)], q, rules, 3), [0]);
    }

    #[test]
    fn a_writer_runs_at_most_its_share_of_the_slots_and_claims_nothing_beyond() {
        let rules = Rules {
            max_concurrent: 4,
            max_running_per_writer: 2,
            ..SERIAL
        };
        // (running, queued, started): B at its share waits; A is not held up by it, not even
        // by B's update of the same component queued ahead of A's.
        let cases: &[(&[Slot], &[Slot], &[usize])] = &[
            (
                &[],
                &[
                    by(B, "a", Health),
                    by(B, "b", Health),
                    by(B, "c", Health),
                    by(A, "a", Health),
                ],
                &[0, 1, 3],
            ),
            (
                &[by(B, "a", Health), by(B, "b", Health)],
                &[by(B, "core", Update), by(A, "core", Update)],
                &[1],
            ),
            (
                &[by(B, "a", Health)],
                &[by(B, "core", Update), by(A, "core", Update)],
                &[0],
            ),
            (
                &[by(A, "a", Health), by(A, "b", Health)],
                &[s("c", Health)],
                &[],
            ),
        ];
        for (running, queued, started) in cases {
            assert_eq!(
                startable(running.iter().copied(), queued.iter().copied(), rules, 3),
                *started,
                "running {running:?}, queued {queued:?}"
            );
        }
    }

    /// Plays arrivals and starts through [`Rounds`] with one run at a time (updates are
    /// serialized), and returns who ran, in order. `script`: a letter per arriving request
    /// (its writer), `.` when the running request ends and the next one starts.
    fn serve(script: &str) -> String {
        let mut rounds = Rounds::default();
        let mut queued: Vec<(char, u64)> = Vec::new();
        let mut ran = String::new();
        let mut running: Option<(char, u64)> = None;
        let next = |queued: &mut Vec<(char, u64)>, rounds: &mut Rounds, ran: &mut String| {
            let order = fair_order(&queued.iter().map(|q| q.1).collect::<Vec<_>>());
            let first = order.first().map(|&i| queued.remove(i));
            if let Some((writer, round)) = first {
                rounds.started(round);
                ran.push(writer);
            }
            first
        };
        for c in script.chars() {
            if c == '.' {
                running = next(&mut queued, &mut rounds, &mut ran);
                continue;
            }
            let latest = queued
                .iter()
                .chain(running.iter())
                .filter(|q| q.0 == c)
                .map(|q| q.1)
                .max();
            queued.push((c, rounds.join(latest)));
        }
        while next(&mut queued, &mut rounds, &mut ran).is_some() {}
        ran
    }

    #[test]
    fn writers_take_turns() {
        // (arrivals and starts, who ran in order)
        let cases = [
            // One writer alone: arrival order, as before.
            ("BBBB", "BBBB"),
            // B's backlog does not put A's one request at its end.
            ("BBBBBA", "BABBBB"),
            (".BBBBBA", "BABBBB"),
            // B runs, A arrives behind B's backlog: A is next.
            ("BBBBB.A", "BABBBB"),
            // Both with a backlog: they alternate, the earlier arrival first in each round.
            ("BBBAAA", "BABABA"),
            ("BBB.AAA", "BABABA"),
            // A writer with nothing waiting joins the current round, behind those already in it,
            // and never gets ahead by submitting one request at a time.
            ("AAAB.B.B.B.", "ABABABB"),
            // A newcomer has its turn in the current round: after those still waiting in it,
            // before anyone's next one.
            ("BBBAA.C", "BACBAB"),
            ("BBBBAA..C", "BACBABB"),
        ];
        for (script, expected) in cases {
            assert_eq!(serve(script), expected, "{script}");
        }
    }

    #[test]
    fn the_order_is_by_round_then_arrival() {
        assert_eq!(fair_order(&[0, 1, 2, 0, 1]), [0, 3, 1, 4, 2]);
        assert!(fair_order(&[]).is_empty());
        let mut rounds = Rounds::default();
        assert_eq!(rounds.join(None), 0);
        assert_eq!(rounds.join(Some(4)), 5);
        rounds.started(7);
        rounds.started(3);
        assert_eq!((rounds.join(None), rounds.join(Some(4))), (7, 7));
    }
}
