//! Integration tests of the lockstep library (one binary, several modules).

mod architecture;
mod conformance;
mod determinism;
mod device_network;
mod nft_conformance;
mod nftables;
mod oracle_can_fail;
mod real_mode;
mod scenario_files;
mod totp_oathtool;
