//! Our TOTP codes against a real peer nobody here wrote: Debian's
//! `oathtool` (installed by `.ci/run`; without it the test is SKIPPED, see
//! [`crate::peer`]).

use std::process::Command;

use lockstep::net::UnixMillis;
use lockstep::totp::{TotpAlgorithm, TotpApp, TotpSettings, TotpVerifier};

use crate::peer;

fn oathtool(args: &[&str]) -> Option<String> {
    let out = Command::new("oathtool").args(args).output().ok()?;
    assert!(out.status.success(), "oathtool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn our_codes_match_oathtool() {
    if oathtool(&["--version"]).is_none() {
        peer::missing::<()>("oathtool", "apt-get install oathtool");
        return;
    }
    peer::found("oathtool");
    let secret: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37).wrapping_add(11)).collect();
    let cases = [
        (TotpAlgorithm::SHA1, "sha1", 6u8, 30u64),
        (TotpAlgorithm::SHA256, "sha256", 8, 30),
        (TotpAlgorithm::SHA512, "sha512", 7, 60),
    ];
    for (algorithm, name, digits, step) in cases {
        let settings = TotpSettings { algorithm, digits, step: std::time::Duration::from_secs(step), skew: 0 };
        let uri = TotpVerifier::otpauth_uri(&settings, &secret, "Lockstep", "alice").expect("uri");
        let mut app = TotpApp::new(0);
        app.scan(&uri).expect("scan");
        for t in [59u64, 1_111_111_109, 1_772_614_800, 2_000_000_000] {
            let ours = app.code(UnixMillis(t * 1000)).expect("enrolled");
            let theirs = oathtool(&[
                &format!("--totp={name}"),
                "-d",
                &digits.to_string(),
                "-s",
                &format!("{step}s"),
                "-N",
                &format!("@{t}"),
                &hex::encode(&secret),
            ])
            .expect("oathtool runs");
            assert_eq!(ours, theirs, "{name}, {digits} digits, {step} s step, t = {t}");
            // And the verifier accepts oathtool's code.
            let mut v = TotpVerifier::new(&settings, &secret).expect("verifier");
            assert!(v.verify(&theirs, UnixMillis(t * 1000), false).is_ok(), "{name} at {t}");
        }
    }
}
