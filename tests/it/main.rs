//! Integration tests of the lockstep library (one binary, several modules).

mod architecture;
mod certify_misbehaving;
mod certify_real;
mod conformance;
mod determinism;
mod device_network;
mod explore;
mod fleet;
mod login_drivers;
mod nftables;
mod oracle_can_fail;
mod peer;
mod peers;
mod real_mode;
mod report_html;
mod scenario_files;
mod totp_oathtool;
