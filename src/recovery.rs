//! What a starting coordinator does with each run record an earlier process left: the decision
//! table of docs/durability.md ("Order of writes", last column) as one pure function, so every
//! row is a unit test. Gathering the facts (reading the records, trying the run's lock) and
//! carrying the decision out live in `daemon::recover`.

/// What was found on disk for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// `request.json` only: accepted, never started.
    Accepted,
    /// `run.json` too: the run was started (its monitor may or may not have got far).
    Started(Started),
    /// A `finished` record: the run was answered.
    Finished {
        /// The request file is still in `requests/`: the crash came before it was removed,
        /// so the final status may never have reached `status/`.
        request_file: bool,
        /// The status file is there but holds no final answer: written without a flush, it
        /// came back empty (or as the progress record it replaced) from a power cut.
        answer_lost: bool,
    },
}

/// A started run, as far as the files and the run's lock tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// The run was started during this boot (its recorded boot id is ours).
    pub this_boot: bool,
    /// Its lock is held: the monitor is alive. Only asked for runs of this boot.
    pub monitor_alive: bool,
    /// The monitor wrote `launched`: the script may have run. Only meaningful for a run of
    /// this boot: `launched` is not flushed, so a power cut may have taken it.
    pub launched: bool,
    /// `exits/<id>.json` is there: the script ended and how is known.
    pub exit_record: bool,
}

/// What to do with that run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// It waits for its turn again; its queued progress record is written again if lost.
    Requeue,
    /// Started but its script never launched: reset the record to accepted, then requeue.
    /// Never launched means never ran, so running it now is running it once.
    Unstart,
    /// Its monitor lives on: follow it until its exit record appears.
    Reattach,
    /// The exit record tells how the script ended: conclude from it (the same answer as
    /// any earlier conclusion, since the record is the same).
    Conclude,
    /// The monitor is gone without an exit record: what the script did is unknown. Answer
    /// `interrupted`, never run it again.
    Interrupted {
        /// The machine restarted since (rather than the monitor being killed).
        rebooted: bool,
    },
    /// Answered already but the request file is still there, or the answer was lost: write
    /// the final status again (the same one, from the journal) and remove the file.
    AnswerAgain,
    /// Answered and collected: only a leftover exit record may need removing.
    Tidy,
}

/// The decision table.
pub fn decide(found: Found) -> Recovery {
    match found {
        Found::Accepted => Recovery::Requeue,
        Found::Finished {
            request_file,
            answer_lost,
        } => {
            if request_file || answer_lost {
                Recovery::AnswerAgain
            } else {
                Recovery::Tidy
            }
        }
        Found::Started(run) => {
            let alive = run.this_boot && run.monitor_alive;
            if run.exit_record {
                Recovery::Conclude
            } else if alive {
                Recovery::Reattach
            } else if !run.this_boot {
                // `launched` may have been lost with the power: whether the script ran is
                // unknown, so it is not run (again).
                Recovery::Interrupted { rebooted: true }
            } else if !run.launched {
                Recovery::Unstart
            } else {
                Recovery::Interrupted {
                    rebooted: !run.this_boot,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(this_boot: bool, monitor_alive: bool, launched: bool, exit_record: bool) -> Found {
        Found::Started(Started {
            this_boot,
            monitor_alive,
            launched,
            exit_record,
        })
    }

    fn finished(request_file: bool, answer_lost: bool) -> Found {
        Found::Finished {
            request_file,
            answer_lost,
        }
    }

    // One test per row of docs/durability.md "Order of writes"; step 1 (a request file with
    // no record) is intake's rescan, not a record.

    #[test]
    fn step_2_an_accepted_record_is_re_queued() {
        assert_eq!(decide(Found::Accepted), Recovery::Requeue);
    }

    #[test]
    fn step_3_a_queued_record_whose_progress_was_written_is_re_queued_the_same_way() {
        // The progress record is repaired when the run is re-queued, whatever it holds.
        assert_eq!(decide(Found::Accepted), Recovery::Requeue);
    }

    #[test]
    fn step_4_started_but_never_launched_in_this_boot_is_re_queued_not_interrupted() {
        assert_eq!(
            decide(started(true, false, false, false)),
            Recovery::Unstart
        );
    }

    #[test]
    fn step_4_started_before_a_reboot_without_an_exit_record_is_interrupted() {
        // `launched` is not flushed: its absence after a power cut proves nothing, so a
        // script that may have run is never run again.
        for launched in [false, true] {
            assert_eq!(
                decide(started(false, false, launched, false)),
                Recovery::Interrupted { rebooted: true }
            );
        }
    }

    #[test]
    fn step_5_a_monitor_still_starting_up_is_re_attached() {
        // Lock busy, `launched` not written yet: the monitor is about to launch the script.
        assert_eq!(
            decide(started(true, true, false, false)),
            Recovery::Reattach
        );
    }

    #[test]
    fn step_5_launched_with_the_lock_busy_is_re_attached() {
        assert_eq!(decide(started(true, true, true, false)), Recovery::Reattach);
    }

    #[test]
    fn step_5_launched_with_the_lock_free_and_no_exit_record_is_interrupted() {
        assert_eq!(
            decide(started(true, false, true, false)),
            Recovery::Interrupted { rebooted: false }
        );
    }

    #[test]
    fn step_5_launched_before_a_reboot_and_no_exit_record_is_interrupted_by_the_reboot() {
        // A lock of another boot says nothing: its holder is certainly gone.
        for lock_busy in [false, true] {
            assert_eq!(
                decide(started(false, lock_busy, true, false)),
                Recovery::Interrupted { rebooted: true }
            );
        }
    }

    #[test]
    fn step_6_an_exit_file_concludes_the_run() {
        assert_eq!(decide(started(true, false, true, true)), Recovery::Conclude);
        // It survived a power cut: it is the script's real result.
        assert_eq!(
            decide(started(false, false, true, true)),
            Recovery::Conclude
        );
        // The monitor wrote its record and has not exited yet: the record wins.
        assert_eq!(decide(started(true, true, true, true)), Recovery::Conclude);
    }

    #[test]
    fn step_7_an_exit_in_the_journal_without_a_finished_record_is_concluded_again() {
        // The same exit record, the same answer.
        assert_eq!(decide(started(true, false, true, true)), Recovery::Conclude);
    }

    #[test]
    fn step_8_a_finished_record_whose_request_file_is_still_there_is_answered_again() {
        // The client may get the same answer twice, never two answers.
        assert_eq!(decide(finished(true, false)), Recovery::AnswerAgain);
    }

    #[test]
    fn step_8_an_answer_that_came_back_empty_from_a_power_cut_is_written_again() {
        assert_eq!(decide(finished(false, true)), Recovery::AnswerAgain);
        assert_eq!(decide(finished(true, true)), Recovery::AnswerAgain);
    }

    #[test]
    fn step_8_a_finished_record_with_the_request_file_removed_and_its_answer_there_or_collected_needs_nothing_more()
     {
        assert_eq!(decide(finished(false, false)), Recovery::Tidy);
    }
}
