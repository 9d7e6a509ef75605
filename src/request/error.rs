//! Why a request was refused: the error a caller branches on (with its stable [`Code`] for the
//! status file) and what could still be read of the request to address the refusal.

use super::{Action, RequestId};
use crate::status::Code;

/// Why a request file was refused. Each variant has a stable machine [`code`](Self::code) that
/// goes into the status file; `Display` is the human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the request is not valid JSON ({0}); write one JSON object per file")]
    InvalidJson(String),
    #[error("the request must be a JSON object")]
    NotAnObject,
    #[error("the request has no `{0}` field")]
    MissingField(&'static str),
    #[error("the field `{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error(
        "request_id {0:?} is not allowed: use 1-128 characters from A-Z a-z 0-9 . _ -, not starting with . or -"
    )]
    InvalidRequestId(String),
    #[error("unknown component {0:?}; the configured components are: {1}")]
    UnknownComponent(String, String),
    #[error("unknown action {0:?}; use update, rollback or health")]
    UnknownAction(String),
    #[error(
        "version {0:?} is not a version: it must start with a digit and use only A-Z a-z 0-9 . + _ - (at most 64 characters), e.g. 1.0.0-beta.8"
    )]
    InvalidVersion(String),
    #[error("`version` is only meaningful for update, not for {0}")]
    UnexpectedVersion(Action),
    #[error(
        "not_before {0:?} is not a time: write RFC 3339, e.g. \"2026-11-28T02:00:00Z\" or \"2026-11-28T03:00:00+01:00\" (without an offset: the host's local time)"
    )]
    InvalidNotBefore(String),
    #[error("invalid multi-component update: {0}")]
    InvalidBatch(String),
}

impl RequestError {
    /// Stable machine-readable code for the status file's `code` field.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidJson(_) => Code::InvalidJson,
            Self::NotAnObject => Code::InvalidRequest,
            Self::MissingField(_) => Code::MissingField,
            Self::WrongType { .. } => Code::WrongType,
            Self::InvalidRequestId(_) => Code::InvalidRequestId,
            Self::UnknownComponent(..) => Code::UnknownComponent,
            Self::UnknownAction(_) => Code::UnknownAction,
            Self::InvalidVersion(_) => Code::InvalidVersion,
            Self::UnexpectedVersion(_) => Code::UnexpectedVersion,
            Self::InvalidNotBefore(_) => Code::InvalidNotBefore,
            Self::InvalidBatch(_) => Code::InvalidBatch,
        }
    }
}

/// A refused request, with whatever could be read from it so the refusal can be addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRequest {
    /// The request's own id, when it had a valid one.
    pub id: Option<RequestId>,
    pub component: Option<String>,
    pub action: Option<String>,
    pub error: RequestError,
}

pub(super) fn reject(
    id: Option<RequestId>,
    component: Option<String>,
    action: Option<String>,
    error: RequestError,
) -> Box<InvalidRequest> {
    Box::new(InvalidRequest {
        id,
        component,
        action,
        error,
    })
}
