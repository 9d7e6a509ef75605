//! `[spool]` and the `[spools.NAME]` drop boxes: one per client container, each with its own
//! directories and what may be asked there. Checked here so that no two share a directory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::check::is_component_name;
use super::raw::{RawDropBox, RawSpool};
use super::*;

/// `[spool]` and the `[spools.NAME]` drop boxes, checked: distinct roots, none inside
/// another, components and actions that exist.
pub(super) fn spools(
    main: &RawSpool,
    drop_boxes: BTreeMap<String, RawDropBox>,
    components: &BTreeMap<String, Component>,
    resolve: impl Fn(PathBuf) -> PathBuf,
) -> Result<Vec<SpoolConfig>, String> {
    let checked = |name: &str,
                   key: &str,
                   root: PathBuf,
                   allowed: Option<&Vec<String>>,
                   actions: Option<&Vec<String>>|
     -> Result<SpoolConfig, String> {
        if let Some(allowed) = allowed
            && let Some(unknown) = allowed.iter().find(|c| !components.contains_key(*c))
        {
            return Err(format!(
                "key {key}.components: {unknown:?} is not a configured component"
            ));
        }
        let actions = match actions {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|a| {
                        Action::parse(a).ok_or_else(|| {
                            format!("key {key}.actions: {a:?} is not update, rollback or health")
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        // A list of everything is no restriction (and reads as the default).
        let every_component =
            allowed.is_some_and(|list| components.keys().all(|name| list.contains(name)));
        let every_action = actions.as_ref().is_some_and(|list| {
            [Action::Update, Action::Rollback, Action::Health]
                .iter()
                .all(|a| list.contains(a))
        });
        Ok(SpoolConfig {
            name: name.to_owned(),
            root: resolve(root),
            components: allowed.filter(|_| !every_component).cloned(),
            actions: actions.filter(|_| !every_action),
        })
    };
    let mut spools = vec![checked(
        MAIN_SPOOL,
        "spool",
        main.root
            .clone()
            .unwrap_or_else(|| DEFAULT_SPOOL_ROOT.into()),
        main.components.as_ref(),
        main.actions.as_ref(),
    )?];
    for (name, raw) in drop_boxes {
        let key = format!("spools.{name}");
        if !is_component_name(&name) || name == MAIN_SPOOL {
            return Err(format!(
                "key {key}: a spool name uses a-z, 0-9, _ and - (at most 64 characters) and is not {MAIN_SPOOL:?}"
            ));
        }
        let root = raw
            .root
            .clone()
            .ok_or(format!("key {key}.root: required"))?;
        spools.push(checked(
            &name,
            &key,
            root,
            raw.components.as_ref(),
            raw.actions.as_ref(),
        )?);
    }
    for (i, a) in spools.iter().enumerate() {
        for b in &spools[i + 1..] {
            if a.root.starts_with(&b.root) || b.root.starts_with(&a.root) {
                return Err(format!(
                    "spools {} and {} share a directory ({} and {}): give each its own root",
                    a.name,
                    b.name,
                    a.root.display(),
                    b.root.display()
                ));
            }
        }
    }
    Ok(spools)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn drop_boxes_are_checked_and_say_what_they_refuse() {
        let c = Config::from_toml(
            "[spools.sched]\nroot = \"/srv/sched\"\ncomponents = [\"scheduler\"]\nactions = [\"health\"]\n",
            Path::new("/"),
        )
        .unwrap();
        let names: Vec<&str> = c.spools.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [MAIN_SPOOL, "sched"]);
        let sched = &c.spools[1];
        assert_eq!(sched.status_dir(), Path::new("/srv/sched/status"));
        assert_eq!(sched.refuses(&["scheduler"], Action::Health), None);
        let why = sched.refuses(&["scheduler"], Action::Update).unwrap();
        assert!(
            why.contains("may not ask for update") && why.contains("spools.sched.actions"),
            "{why}"
        );
        let why = sched.refuses(&["core"], Action::Health).unwrap();
        assert!(why.contains("component core"), "{why}");
        // The main spool may ask for anything unless told otherwise.
        assert_eq!(c.spools[0].refuses(&["core"], Action::Update), None);

        for (text, expected) in [
            (
                "[spools.a]\nroot = \"/var/dunebugger/updates/a\"\n",
                "share a directory",
            ),
            (
                "[spools.a]\nroot = \"/srv/a\"\n[spools.b]\nroot = \"/srv/a\"\n",
                "share a directory",
            ),
            ("[spools.a]\n", "spools.a.root: required"),
            (
                "[spools.a]\nroot = \"/a\"\ncomponents = [\"nas\"]\n",
                "not a configured component",
            ),
            (
                "[spools.a]\nroot = \"/a\"\nactions = [\"reboot\"]\n",
                "spools.a.actions",
            ),
            ("[spools.main]\nroot = \"/a\"\n", "spool name"),
        ] {
            let err = Config::from_toml(text, Path::new("/")).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
