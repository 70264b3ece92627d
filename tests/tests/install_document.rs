//! The SSM install document `deploy/ssm/Install-ACMCertificate.yaml`, run for real.
//!
//! The document is parsed, its parameters are checked against their
//! `allowedPattern` and substituted the way SSM does it, and the script is then
//! run the way the SSM agent runs it (`sh -c <file>`), against the emulator's
//! Secrets Manager, with `CertDir`/`KeyDir` in a temporary directory and its lock and
//! work directory (`CERTFLOW_RUN_DIR`) on tmpfs under /dev/shm. Everything is done with
//! subprocesses: the venv's AWS CLI for the secrets, `openssl` for keys and certificates.
//! Faults are injected through PATH shims (an `aws` that records its calls, an `mv` that
//! fails after a chosen move): the script has no test hook.
//!
//! The emulator tests need the environment that the README's test command
//! sets up (`AWS_ENDPOINT_URL` and friends, see `deploy/local/emulator.sh`). Without
//! it they fail; they do not skip.

#[path = "install_document/document.rs"]
mod document;
#[path = "install_document/harness.rs"]
mod harness;
#[path = "install_document/installs.rs"]
mod installs;
#[path = "install_document/material.rs"]
mod material;
#[path = "install_document/pem_checks.rs"]
mod pem_checks;
#[path = "install_document/refusals.rs"]
mod refusals;
#[path = "install_document/static_checks.rs"]
mod static_checks;
#[path = "install_document/switch.rs"]
mod switch;
#[path = "install_document/verify.rs"]
mod verify;
