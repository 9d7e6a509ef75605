//! Staged rollouts: a release of one component goes to the group's hosts in waves (10 %, then
//! 50 %, then all), a delay apart, and halts once N hosts failed it. A rollout is one etcd key;
//! each host works out its own wave from a stable hash of its id and the rollout's id, so no
//! server assigns hosts. Pure: the record, a host's wave, when it opens, and what a request
//! for the rolled-out version must do now.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A rollout as stored at [`super::keys::rollout`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub component: String,
    pub version: String,
    /// Cumulative percentages of hosts, rising, the last 100: `[10, 50, 100]`.
    pub waves: Vec<u8>,
    pub wave_delay_secs: u64,
    /// Failed hosts at which the rollout halts (0: never).
    pub max_failures: u64,
    /// Unix seconds.
    pub started_at: i64,
    pub state: State,
    /// While paused: since when (unix seconds); time paused does not count towards waves.
    #[serde(default)]
    pub paused_at: Option<i64>,
    #[serde(default)]
    pub paused_secs: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Active,
    Paused,
    /// Failures reached `max_failures`: hosts that have not started answer `rollout_halted`.
    Halted,
    /// Stopped by an operator: the same for hosts that have not started.
    Aborted,
}

/// What an update request for the rollout's component and version must do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Its host's wave is open: it may start.
    Open,
    /// It waits for wave `wave` (1-based) to open at `opens_at` (unix seconds; `None` while
    /// the rollout is paused).
    Wait { wave: usize, opens_at: Option<i64> },
    /// The rollout halted or was aborted: refuse it (`rollout_halted`).
    Halted { state: State, failures: u64 },
}

/// Checks `--waves`: rising percentages from 1 to 100, ending at 100.
pub fn parse_waves(text: &str) -> Result<Vec<u8>, String> {
    let waves = text
        .split(',')
        .map(|w| w.trim().trim_end_matches('%').parse::<u8>())
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| format!("--waves {text:?}: give rising percentages, e.g. 10,50,100"))?;
    let rising = waves.windows(2).all(|w| w[0] < w[1]);
    if waves.is_empty() || !rising || waves[0] == 0 || waves.last() != Some(&100) {
        return Err(format!(
            "--waves {text:?}: give rising percentages from 1 that end at 100, e.g. 10,50,100"
        ));
    }
    Ok(waves)
}

/// Where a host falls among all hosts, 0..100: the same for the same host and rollout, and
/// independent between rollouts (so the first wave is not always the same hosts).
pub fn percentile(host: &str, rollout_id: &str) -> u8 {
    let digest = Sha256::new()
        .chain_update(host.as_bytes())
        .chain_update(b"\n")
        .chain_update(rollout_id.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % 100) as u8
}

/// The host's wave, 1-based: the first whose percentage is above its percentile.
pub fn wave_of(host: &str, rollout: &Rollout) -> usize {
    let p = percentile(host, &rollout.id);
    rollout
        .waves
        .iter()
        .position(|&w| p < w)
        .unwrap_or(rollout.waves.len().saturating_sub(1))
        + 1
}

impl Rollout {
    /// When wave `wave` (1-based) opens, in unix seconds; `None` while paused.
    pub fn opens_at(&self, wave: usize) -> Option<i64> {
        if self.state == State::Paused {
            return None;
        }
        let delay = self.wave_delay_secs as i64 * (wave as i64 - 1);
        Some(self.started_at + self.paused_secs + delay)
    }

    /// Whether this rollout concerns an update of `component` to `version`.
    pub fn covers(&self, component: &str, version: &str) -> bool {
        self.component == component && self.version == version
    }

    /// What `host`'s request must do at `now` (unix seconds), with `failures` hosts failed.
    pub fn gate(&self, host: &str, now: i64, failures: u64) -> Gate {
        let braked = self.max_failures > 0 && failures >= self.max_failures;
        match self.state {
            State::Halted | State::Aborted => {
                return Gate::Halted {
                    state: self.state,
                    failures,
                };
            }
            _ if braked => {
                return Gate::Halted {
                    state: State::Halted,
                    failures,
                };
            }
            _ => {}
        }
        let wave = wave_of(host, self);
        match self.opens_at(wave) {
            Some(at) if at <= now => Gate::Open,
            opens_at => Gate::Wait { wave, opens_at },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(waves: &[u8]) -> Rollout {
        Rollout {
            id: "r1".into(),
            component: "remote".into(),
            version: "2.0.0".into(),
            waves: waves.to_vec(),
            wave_delay_secs: 60,
            max_failures: 2,
            started_at: 1000,
            state: State::Active,
            paused_at: None,
            paused_secs: 0,
        }
    }

    #[test]
    fn waves_are_rising_percentages_that_end_at_100() {
        assert_eq!(parse_waves("10,50,100").unwrap(), [10, 50, 100]);
        assert_eq!(parse_waves("100").unwrap(), [100]);
        for bad in ["", "50,10,100", "10,50", "0,100", "10,x,100", "10,10,100"] {
            assert!(parse_waves(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_hosts_place_is_stable_and_spread_over_the_hosts() {
        assert_eq!(percentile("pi-1", "r1"), percentile("pi-1", "r1"));
        let firsts = (0..1000)
            .filter(|i| wave_of(&format!("pi-{i}"), &rollout(&[10, 50, 100])) == 1)
            .count();
        assert!(
            (50..150).contains(&firsts),
            "{firsts} of 1000 in the 10 % wave"
        );
    }

    #[test]
    fn wave_n_opens_n_minus_1_delays_after_the_start_plus_the_time_paused() {
        let mut r = rollout(&[10, 50, 100]);
        assert_eq!(r.opens_at(1), Some(1000));
        assert_eq!(r.opens_at(3), Some(1120));
        r.paused_secs = 30;
        assert_eq!(r.opens_at(2), Some(1090));
        r.state = State::Paused;
        assert_eq!(r.opens_at(1), None);
    }

    #[test]
    fn a_request_waits_for_its_wave_and_is_refused_once_the_brake_holds() {
        let r = rollout(&[10, 50, 100]);
        let host = (0..)
            .map(|i| format!("pi-{i}"))
            .find(|h| wave_of(h, &r) == 3)
            .unwrap();
        assert_eq!(
            r.gate(&host, 1000, 0),
            Gate::Wait {
                wave: 3,
                opens_at: Some(1120)
            }
        );
        assert_eq!(r.gate(&host, 1120, 1), Gate::Open);
        assert_eq!(
            r.gate(&host, 1120, 2),
            Gate::Halted {
                state: State::Halted,
                failures: 2
            }
        );
        let aborted = Rollout {
            state: State::Aborted,
            ..r
        };
        assert!(matches!(aborted.gate(&host, 1120, 0), Gate::Halted { .. }));
    }
}
