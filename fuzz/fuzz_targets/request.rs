//! Request parsing and validation: arbitrary bytes as a request file.
//!
//! Checks the promises `src/request.rs` makes to the rest of the service, not only that
//! nothing panics: an accepted request carries a safe id, an allow-listed component and a
//! version that is one harmless argv element; a refusal always has a code and a message, and
//! whatever id it kept is safe as a file name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use update_coordinator::request::{
    printable, Action, Request, RequestId, Version, MAX_ID_LEN, MAX_VERSION_LEN,
};

const COMPONENTS: [&str; 3] = ["core", "scheduler", "remote"];

fuzz_target!(|data: &[u8]| {
    match Request::parse(data, COMPONENTS) {
        Ok(request) => check_accepted(&request),
        Err(rejection) => {
            let code = rejection.error.code();
            let code = code.as_str();
            assert!(!code.is_empty(), "empty code for {:?}", rejection.error);
            assert!(
                code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "code {code:?} is not a stable snake_case code"
            );
            assert!(!rejection.error.to_string().is_empty());
            if let Some(id) = &rejection.id {
                check_id(id);
            }
            // What a refusal echoes back goes into the journal and the status file.
            for text in [&rejection.component, &rejection.action]
                .into_iter()
                .flatten()
            {
                assert!(
                    !text.chars().any(char::is_control),
                    "unescaped control character in {text:?}"
                );
            }
        }
    }

    // The same bytes as a bare id, a file name and a version.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(id) = RequestId::parse(text) {
            assert_eq!(id.as_str(), text);
            check_id(&id);
        }
        if let Some(id) = RequestId::from_file_name(text) {
            assert_eq!(id.status_file_name(), text);
            check_id(&id);
        }
        if let Ok(version) = Version::parse(text) {
            assert_eq!(version.as_str(), text);
            check_version(&version);
        }
        let shown = printable(text);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
    }
});

fn check_accepted(request: &Request) {
    check_id(&request.id);
    assert!(
        COMPONENTS.contains(&request.component.as_str()),
        "component {:?} is not allow-listed",
        request.component
    );
    match (request.action, &request.version) {
        (Action::Update, Some(version)) => check_version(version),
        (Action::Update, None) => panic!("an update without a version was accepted"),
        (Action::Rollback | Action::Health, Some(v)) => {
            panic!("{} accepted with version {:?}", request.action, v.as_str())
        }
        (Action::Rollback | Action::Health, None) => {}
    }
    assert_eq!(Action::parse(request.action.as_str()), Some(request.action));
}

/// A request id must be usable as `status/<id>.json` without leaving `status/`.
fn check_id(id: &RequestId) {
    let s = id.as_str();
    assert_eq!(
        RequestId::parse(s).as_ref(),
        Ok(id),
        "id {s:?} does not round-trip"
    );
    assert_eq!(
        RequestId::from_file_name(&id.status_file_name()).as_ref(),
        Some(id)
    );
    assert!(!s.is_empty() && s.len() <= MAX_ID_LEN, "{s:?}");
    assert!(!s.starts_with('.') && !s.starts_with('-'), "{s:?}");
    assert!(
        !s.contains('/') && !s.contains("..") && !s.contains('\0'),
        "{s:?}"
    );
    assert!(!s.chars().any(char::is_control), "{s:?}");
}

/// A version is passed as one argv element: it must never look like an option.
fn check_version(version: &Version) {
    let s = version.as_str();
    assert!(
        Version::parse(s).is_ok(),
        "version {s:?} does not round-trip"
    );
    assert!(!s.starts_with('-'), "version {s:?} looks like an option");
    assert!(!s.is_empty() && s.len() <= MAX_VERSION_LEN, "{s:?}");
    assert!(
        !s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/'),
        "{s:?}"
    );
}
