//! Admission: whether a valid request fits, before it is accepted. The queue, the requests
//! waiting for their time and each component's hourly cap are shared by all writers; each
//! writer may take only its share of them (see [`crate::fairshare`]), so one writer cannot
//! get another's requests refused.

use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::Daemon;
use crate::fairshare::Writer;
use crate::ratelimit::Key;
use crate::report::Refusal;
use crate::request::Request;
use crate::status::Code;

impl Daemon {
    /// Checks `request` from `writer`, which may start at once (`waits_until` is `None`) or
    /// waits until then (phase `scheduled`). If it fits, its hourly caps are used.
    pub(super) fn admit(
        &mut self,
        request: &Request,
        writer: Writer,
        waits_until: Option<Timestamp>,
    ) -> Result<(), Refusal> {
        let config = &self.config;
        if let Some(not_before) = request.not_before
            && let Some(horizon) = horizon(Timestamp::now(), config.retention)
            && not_before > horizon
        {
            let days = config.retention.as_secs_f64() / 86400.0;
            return Err(Refusal::of_request(
                request,
                Code::InvalidNotBefore,
                format!(
                    "not_before {not_before} is more than {days} days ahead (state.retention_days): a request may wait at most as long as answers are kept; submit it nearer the time"
                ),
            ));
        }
        let (mut queued, mut scheduled, mut writers_queued, mut writers_scheduled) = (0, 0, 0, 0);
        for job in &self.queue {
            let mine = job.writer() == writer;
            if job.waits_until.is_some() {
                scheduled += 1;
                writers_scheduled += usize::from(mine);
            } else {
                queued += 1;
                writers_queued += usize::from(mine);
            }
        }
        let full = |message| Err(Refusal::of_request(request, Code::QueueFull, message));
        if waits_until.is_some() {
            // Waiting for its time, it holds nobody up: it takes no place in the queue.
            if writers_scheduled >= config.max_scheduled_per_writer {
                return full(format!(
                    "{writer} already has {writers_scheduled} requests waiting for their not_before or a maintenance window, its limit (spool.max_scheduled_per_writer); cancel one, or try again once one has started"
                ));
            }
            if scheduled >= config.max_queued {
                return full(format!(
                    "{scheduled} requests are already waiting for their not_before or a maintenance window (at most spool.max_queued of all writers together); try again later"
                ));
            }
        } else {
            if writers_queued >= config.max_queued_per_writer {
                return full(format!(
                    "{writer} already has {writers_queued} requests waiting for their turn, its share of the queue (spool.max_queued_per_writer); try again once one has run"
                ));
            }
            if queued >= config.max_queued {
                return full(format!(
                    "{queued} requests are already waiting (spool.max_queued); try again later"
                ));
            }
        }
        self.use_hourly_caps(request, writer)
            .map_err(|message| Refusal::of_request(request, Code::RateLimited, message))
    }

    /// Uses one of the hourly update/rollback caps of each of the request's components: the
    /// component's own, and the writer's share of it. Uses none unless all have room.
    fn use_hourly_caps(&mut self, request: &Request, writer: Writer) -> Result<(), String> {
        if !request.action.is_exclusive() {
            return Ok(());
        }
        let now = Instant::now();
        let mut keys = Vec::new();
        for name in request.components() {
            let component = &self.config.components[name];
            let total = Key {
                component: name.to_owned(),
                writer: None,
            };
            let share = Key {
                writer: Some(writer),
                ..total.clone()
            };
            let limit = component.max_updates_per_hour;
            let share_limit = component.max_updates_per_hour_per_writer;
            let retry = |wait: Duration| wait.as_secs() + 1;
            if let Err(wait) = self.rate.check(&share, share_limit, now) {
                return Err(format!(
                    "{writer} already had {share_limit} {name} update/rollback requests in the last hour, its share (components.{name}.max_updates_per_hour_per_writer); try again in {} s",
                    retry(wait)
                ));
            }
            if let Err(wait) = self.rate.check(&total, limit, now) {
                return Err(format!(
                    "{name} already had {limit} update/rollback requests in the last hour (components.{name}.max_updates_per_hour); try again in {} s",
                    retry(wait)
                ));
            }
            // Unlimited (0) caps have nothing to remember.
            keys.extend([(total, limit), (share, share_limit)]);
        }
        for (key, _) in keys.into_iter().filter(|(_, limit)| *limit != 0) {
            self.rate.record(key, now);
        }
        Ok(())
    }
}

/// The latest `not_before` accepted at `now`: a request waits at most as long as answers are
/// kept, so a writer's scheduled requests (`spool.max_scheduled_per_writer`) free up within
/// that time even if it never cancels them, and `9999-01-01` is refused, not kept for ever.
fn horizon(now: Timestamp, retention: Duration) -> Option<Timestamp> {
    let retention = jiff::SignedDuration::try_from(retention).ok()?;
    now.checked_add(retention).ok()
}
