//! Every file in tests/fixtures/valid loads; every file in tests/fixtures/invalid is refused with
//! a problem that names the key path its first line announces (`# expect: KEY`).

use lariat::Config;
use std::path::Path;

fn files(dir: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(dir);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no fixtures in {}", dir.display());
    v
}

#[test]
fn valid_fixtures_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = [root.join("conf/lariat.toml"), root.join("docker/lariat.toml")];
    for f in files("valid").into_iter().chain(shipped) {
        if let Err(e) = Config::load(&f) {
            panic!("{} refused:\n{e}", f.display());
        }
    }
}

/// The lariat.toml embedded in the Kubernetes ConfigMap is a valid config too.
#[test]
fn kubernetes_configmap_config_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/kubernetes/30-configmap.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let start = text.find("lariat.toml: |\n").expect("no lariat.toml in the ConfigMap") + "lariat.toml: |\n".len();
    let toml: String = text[start..]
        .lines()
        .take_while(|l| l.starts_with("    ") || l.is_empty())
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    let c = Config::parse(&toml).unwrap_or_else(|e| panic!("ConfigMap lariat.toml refused:\n{e}\n{toml}"));
    assert!(c.providers.kubernetes.is_some());
}

#[test]
fn invalid_fixtures_are_refused_naming_the_key() {
    for f in files("invalid") {
        let text = std::fs::read_to_string(&f).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect:"))
            .unwrap_or_else(|| panic!("{}: first line must be '# expect: KEY'", f.display()))
            .trim();
        let err = match Config::load(&f) {
            Ok(_) => panic!("{} accepted", f.display()),
            Err(e) => e,
        };
        let problems = err.problems();
        if expect.ends_with(".expression") {
            let msg = &problems.iter().find(|p| p.key == expect).unwrap().message;
            assert!(
                msg.contains("cannot parse \"") && msg.contains('^'),
                "{}: the expression error must quote it and point: {msg}",
                f.display()
            );
        }
        assert!(
            problems.iter().any(|p| p.key == expect),
            "{}: no problem names {expect:?}; got:\n{err}",
            f.display()
        );
    }
}
