//! Which queued requests may start now. Pure, so the rules can be tested on their own.
//!
//! Rules: `update` and `rollback` are exclusive: by default one at a time across all
//! components (they share one compose file), else one at a time per component. `health` runs
//! alongside others, but never on a component that is being updated or rolled back. Requests
//! that conflict keep their arrival order: a request never overtakes an earlier one it
//! conflicts with. At most `max_concurrent` scripts run at once.

use std::collections::HashSet;

use crate::request::Action;

#[derive(Debug, Clone, Copy)]
pub struct Rules {
    pub serialize_updates: bool,
    pub max_concurrent: usize,
}

/// What the rules need to know of a request.
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    pub component: &'a str,
    pub action: Action,
    /// A multi-component update: it claims every component (and waits for all to be free).
    pub all_components: bool,
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

/// Indices into `queued` (in arrival order) of the requests to start now, in order.
pub fn startable<'a>(
    running: impl IntoIterator<Item = Slot<'a>>,
    queued: impl IntoIterator<Item = Slot<'a>>,
    rules: Rules,
    component_count: usize,
) -> Vec<usize> {
    let mut claims = Claims::default();
    let mut busy = 0;
    for slot in running {
        claims.add(slot);
        busy += 1;
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
        if !claims.blocks(slot, rules) {
            start.push(index);
            busy += 1;
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
    };

    fn s(component: &str, action: Action) -> Slot<'_> {
        Slot {
            component,
            action,
            all_components: false,
        }
    }

    fn batch(first: &str) -> Slot<'_> {
        Slot {
            component: first,
            action: Update,
            all_components: true,
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
}
