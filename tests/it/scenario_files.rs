//! Every shipped scenario parses, and the binary embeds exactly the files
//! of `scenarios/`.

use lockstep::scenario::{EMBEDDED, EMBEDDED_PREFIX, Scenario};

#[test]
fn embedded_scenarios_are_the_files_on_disk() {
    let mut on_disk: Vec<(String, String)> = std::fs::read_dir("scenarios")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    on_disk.sort();
    let mut embedded: Vec<(String, String)> = EMBEDDED.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
    embedded.sort();
    assert_eq!(on_disk, embedded, "add new scenarios to scenario::EMBEDDED");
    for (name, _) in EMBEDDED {
        let s = Scenario::load(&format!("{EMBEDDED_PREFIX}{name}")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&s.name, name, "a scenario's name is its file name");
        assert!(!s.description.is_empty(), "{name} has a description");
        assert!(
            s.steps
                .iter()
                .all(|st| st.expect.is_some() || matches!(st.action, lockstep::scenario::Action::Advance { .. })),
            "{name}: every step but `advance` states what it expects"
        );
    }
}

#[test]
fn unknown_embedded_names_are_an_input_error() {
    let e = Scenario::load("embedded:nope").unwrap_err();
    assert!(e.message.contains("boot-to-login"), "{e}");
}
