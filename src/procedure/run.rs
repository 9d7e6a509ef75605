//! Carrying the health-gated update out, in the run's monitor: the health gate after
//! `update.sh`, the rollback when the gate fails, and a multi-component update's components in
//! order (rolled back newest first when one fails). What the steps mean for the answer is
//! decided in the parent module, from the steps alone.

use std::sync::Arc;

use tokio::sync::watch;

use crate::runner::{self, RunEvents};

/// What a procedure reports while it runs, besides the script's own events: the monitor's
/// reporter (phases go to the status file, events to the audit log).
pub trait Reports: RunEvents {
    /// Appends `event` (with `detail`, for `component` unless empty) to the audit log.
    fn audit(&self, event: &str, detail: &str, component: &str);
}

/// The reporter as the runner sees it.
fn as_events<R: Reports + 'static>(reporter: &Arc<R>) -> Arc<dyn RunEvents> {
    Arc::clone(reporter) as Arc<dyn RunEvents>
}

/// What a multi-component update did.
pub(crate) struct BatchRun {
    /// The update that decided the batch: the failing one, else the last one.
    pub(crate) result: std::io::Result<runner::Outcome>,
    pub(crate) steps: Vec<super::Step>,
    pub(crate) members: Vec<super::MemberOutcome>,
    /// The failing component's own sentence.
    pub(crate) failure: Option<String>,
}

/// Updates the components in order, each through its health gate; when one fails, the ones
/// already updated are rolled back, newest first, and the rest are not started.
pub(crate) async fn run_batch<R: Reports + 'static>(
    members: &[super::ComponentUpdate],
    reporter: &Arc<R>,
    stop: &watch::Receiver<bool>,
) -> BatchRun {
    use super::{MemberOutcome, MemberResult, Step, UpdateOutcome, outcome};
    let mut run = BatchRun {
        result: Err(std::io::Error::other("no component to update")),
        steps: Vec::new(),
        members: members
            .iter()
            .map(|m| MemberOutcome {
                component: m.component.clone(),
                version: m.version.clone(),
                outcome: MemberResult::NotStarted,
            })
            .collect(),
        failure: None,
    };
    let tag = |steps: Vec<Step>, component: &str| -> Vec<Step> {
        steps
            .into_iter()
            .map(|mut s| {
                s.component = Some(component.to_owned());
                s
            })
            .collect()
    };
    let mut updated = Vec::new();
    for (i, member) in members.iter().enumerate() {
        if *stop.borrow() {
            break;
        }
        reporter.phase(format!("updating {}", member.component));
        let result = runner::run(member.update.clone(), as_events(reporter), stop.clone()).await;
        let steps = match &member.procedure {
            Some(procedure) => gate(procedure, &result, reporter, stop, &member.component).await,
            None => vec![Step::of("update", &result)],
        };
        let (outcome, message) = match &member.procedure {
            Some(_) => outcome(&steps, &member.version),
            None if steps[0].succeeded() => (UpdateOutcome::Updated, String::new()),
            None => (
                UpdateOutcome::Failed,
                format!("the update to {} failed", member.version),
            ),
        };
        run.steps.extend(tag(steps, &member.component));
        run.members[i].outcome = MemberResult::Ended(outcome);
        run.result = result;
        if outcome != UpdateOutcome::Updated {
            run.failure = Some(format!("{}: {message}", member.component));
            break;
        }
        updated.push(i);
    }
    if run.failure.is_none() && !*stop.borrow() {
        return run;
    }
    // Newest first: the last one updated may depend on the earlier ones.
    for &i in updated.iter().rev() {
        let member = &members[i];
        let Some(procedure) = &member.procedure else {
            continue;
        };
        if *stop.borrow() {
            break;
        }
        let mut steps = Vec::new();
        let healthy = roll_back(
            procedure,
            "0",
            reporter,
            stop,
            &mut steps,
            &member.component,
        )
        .await;
        run.steps.extend(tag(steps, &member.component));
        run.members[i].outcome = MemberResult::Ended(if healthy {
            UpdateOutcome::RolledBack
        } else {
            UpdateOutcome::RollbackFailed
        });
    }
    run
}

/// The health gate after `update.sh` and, when needed, the rollback (see [`crate::procedure`]).
/// Returns every step, the update first. A stop request (SIGTERM) ends the procedure.
pub(crate) async fn gate<R: Reports + 'static>(
    procedure: &super::Procedure,
    update: &std::io::Result<runner::Outcome>,
    reporter: &Arc<R>,
    stop: &watch::Receiver<bool>,
    component: &str,
) -> Vec<super::Step> {
    use super::Step;
    let mut steps = vec![Step::of("update", update)];
    let stopped = |stop: &watch::Receiver<bool>| *stop.borrow();
    if stopped(stop) {
        return steps;
    }
    if steps[0].succeeded() && healthy(procedure, reporter, stop, &mut steps, component).await {
        return steps;
    }
    if stopped(stop) {
        return steps;
    }
    let update_exit = steps[0]
        .exit_code
        .map_or_else(|| "none".to_owned(), |c| c.to_string());
    roll_back(
        procedure,
        &update_exit,
        reporter,
        stop,
        &mut steps,
        component,
    )
    .await;
    steps
}

/// Runs `rollback.sh`, then (if it succeeded) the health check; returns whether the
/// component is healthy again. `update_exit` tells rollback.sh how the update ended (a
/// script that restored itself may have nothing to undo).
async fn roll_back<R: Reports + 'static>(
    procedure: &super::Procedure,
    update_exit: &str,
    reporter: &Arc<R>,
    stop: &watch::Receiver<bool>,
    steps: &mut Vec<super::Step>,
    component: &str,
) -> bool {
    use super::Step;
    reporter.phase(if component.is_empty() {
        "rolling_back".into()
    } else {
        format!("rolling_back {component}")
    });
    let mut rollback = procedure.rollback.clone();
    rollback
        .env
        .push(("UPDATE_EXIT_CODE".into(), update_exit.to_owned()));
    let result = runner::run(rollback, as_events(reporter), stop.clone()).await;
    steps.push(Step::of("rollback", &result));
    let rolled_back = steps.last().is_some_and(Step::succeeded);
    let detail = if rolled_back {
        "rollback.sh succeeded"
    } else {
        "rollback.sh FAILED"
    };
    reporter.audit("rolled_back", detail, component);
    rolled_back && !*stop.borrow() && healthy(procedure, reporter, stop, steps, component).await
}

/// Runs the health check up to `health_retries` times; returns whether it passed.
async fn healthy<R: Reports + 'static>(
    procedure: &super::Procedure,
    reporter: &Arc<R>,
    stop: &watch::Receiver<bool>,
    steps: &mut Vec<super::Step>,
    component: &str,
) -> bool {
    for attempt in 1..=procedure.health_retries {
        reporter.phase(format!(
            "health_check {attempt}/{}",
            procedure.health_retries
        ));
        let result = runner::run(procedure.health.clone(), as_events(reporter), stop.clone()).await;
        let step = super::Step::of("health", &result);
        let passed = step.succeeded();
        steps.push(step);
        if passed {
            return true;
        }
        reporter.audit(
            "health_failed",
            &format!("attempt {attempt}/{}", procedure.health_retries),
            component,
        );
        if *stop.borrow() || attempt == procedure.health_retries {
            break;
        }
        tokio::time::sleep(procedure.health_interval).await;
    }
    false
}
