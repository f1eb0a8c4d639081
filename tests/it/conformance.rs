//! The conformance suite (tests/conformance) against the WFP model, and proof that the
//! runner can fail.

use std::path::Path;

use lockstep::conformance::{
    Backend, CaseOutcome, WfpModel, load_cases, load_unsupported, parse_case, parse_unsupported, run_suite,
};

const CASES: &str = "tests/conformance/cases";
const MODEL_UNSUPPORTED: &str = "tests/conformance/wfp-model.unsupported.toml";

#[test]
fn every_case_passes_on_the_model() {
    let cases = load_cases(Path::new(CASES)).unwrap_or_else(|e| panic!("{e}"));
    let unsupported = load_unsupported(Path::new(MODEL_UNSUPPORTED)).unwrap_or_else(|e| panic!("{e}"));
    let report = run_suite(&mut WfpModel::new(), &cases, &unsupported);
    println!("{report}");
    assert!(report.passed(), "{report}");
}
