//! A simulated SSM fleet: managed servers that the fault proxy answers for on the wire,
//! the way AWS answers, instead of the emulator.
//!
//! moto 5.2.5 has no `DescribeInstanceInformation` and no `ListCommandInvocations`, runs
//! every command at once and successfully, and a real fleet of 1,000 servers must not
//! become thousands of emulator objects. So every [`FaultProxy`](crate::proxy::FaultProxy)
//! in the process answers these SSM operations (JSON protocol, `X-Amz-Target:
//! AmazonSSM.<Op>`) from one process-wide [`Fleet::global`]: `DescribeInstanceInformation`,
//! `SendCommand`, `ListCommands`, `ListCommandInvocations`, `GetCommandInvocation` and
//! `CancelCommand`. Every other operation is forwarded to the emulator as before. The
//! proxy's rules still apply in front of the fleet: a throttle rule on SSM throttles, and
//! [`Action::RewriteSsm`](crate::proxy::Action::RewriteSsm) /
//! [`Action::SetStdout`](crate::proxy::Action::SetStdout) rewrite the fleet's answers
//! (command aggregates included).
//!
//! ```no_run
//! use certflow_tests::fleet::{Behaviour, Fleet, Kind};
//! let fleet = Fleet::global();
//! let ids = fleet.add(3, &[("Role", "web-1234")], Kind::Ec2);
//! fleet.set_behaviour(&ids[0], Behaviour::Fail { stderr: "disk full".into() });
//! // … a worker sends its install command through a FaultProxy …
//! assert!(fleet.received(&ids[2]).is_empty() || fleet.installed_serial(&ids[2]).is_some());
//! ```
//!
//! **Servers.** [`Fleet::add`] registers servers with tags (tests use unique tag values,
//! so they never see each other's servers). Ids are unique in the process and sort in
//! the order the servers were added: `i-0f1ee7…` (17 hex digits) for EC2 instances,
//! `mi-0f1ee7…` for on-premises managed instances.
//!
//! **Commands.** `SendCommand` takes `InstanceIds` (at most 50) or `Targets`
//! (`tag:<key>`, `tag-key`, `InstanceIds`), resolved against the fleet when the command
//! is sent. Each target server gets an invocation and records what it [`Received`].
//! Invocations run in [`MaxConcurrency`] lanes (in instance-id order): each one is
//! `Pending` until it starts, `InProgress` until its server's latency has elapsed, then
//! final as the server's [`Behaviour`] says. When more invocations have failed than
//! `MaxErrors` allows by the time the next one would start, that one and the rest are
//! not run (reported `Cancelled`). The behaviour and latency are taken when the command
//! is sent.
//!
//! **Output** is the install document's (`deploy/ssm/Install-ACMCertificate.yaml`): on
//! success `CERTFLOW_INSTALLED_SERIAL=<serial>`, the serial of the certificate in the
//! secret the command's `SecretId` names (read once per command from the emulator's
//! Secrets Manager with the SendCommand request's credentials), in openssl's format
//! (uppercase hex, no colons): its `certificate` PEM's, else its `serial` field (ACM's
//! `0a:1b:…`, or the emulator's decimal, converted). With a non-empty `VerifyPort`
//! parameter a success also prints `CERTFLOW_SERVED_SERIAL=<serial>`. A command without
//! a `SecretId` parameter (any other document) succeeds with empty output.
//!
//! [`MaxConcurrency`]: https://docs.aws.amazon.com/systems-manager/latest/userguide/send-commands-multiple.html

mod sim;
pub(crate) mod wire;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use sim::{Inner, Server};

/// Where a server runs: its id prefix and `ResourceType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An EC2 instance: `i-…`, `ResourceType` `EC2Instance`.
    Ec2,
    /// An on-premises (hybrid activation) server: `mi-…`, `ResourceType` `ManagedInstance`.
    OnPrem,
}

/// How a server answers the commands it receives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Behaviour {
    /// Installs and reports the serial (the default).
    #[default]
    Succeed,
    /// The document fails with this standard error (exit status 1).
    Fail {
        /// The standard error (its first line is what certflow records).
        stderr: String,
    },
    /// The reload left the old certificate serving. With a non-empty `VerifyPort`
    /// parameter the document notices, restores the old files and fails; without one it
    /// reports success, and the server keeps serving its old serial.
    ServesOld,
    /// Never finishes: the invocation stays `InProgress` until cancelled.
    Silent,
    /// The agent is offline: `PingStatus` `ConnectionLost`; invocations stay `Pending`,
    /// then end `TimedOut` (`DeliveryTimedOut`) when the latency has elapsed.
    Offline,
}

/// A command a server received.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    /// The command id.
    pub command_id: String,
    /// The document.
    pub document_name: String,
    /// The command's comment.
    pub comment: String,
    /// The parameters as sent.
    pub parameters: BTreeMap<String, Vec<String>>,
    /// When it was sent.
    pub at: SystemTime,
}

/// A command as the fleet holds it (for assertions).
#[derive(Clone, Debug, PartialEq)]
pub struct CommandSummary {
    /// The command id.
    pub command_id: String,
    /// The document.
    pub document_name: String,
    /// The comment.
    pub comment: String,
    /// The servers it was delivered to (its invocations), sorted.
    pub instance_ids: Vec<String>,
    /// The aggregate status now (`Pending`, `InProgress`, `Success`, `Failed`, …).
    pub status: String,
}

/// The simulated fleet. One per process: [`Fleet::global`].
pub struct Fleet {
    inner: Mutex<Inner>,
    calls: Mutex<BTreeMap<String, u64>>,
    next_server: AtomicU64,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("Fleet")
            .field("servers", &inner.servers.len())
            .field("commands", &inner.commands.len())
            .finish()
    }
}

impl Fleet {
    /// The fleet every [`FaultProxy`](crate::proxy::FaultProxy) of this process answers from.
    pub fn global() -> &'static Fleet {
        static FLEET: OnceLock<Fleet> = OnceLock::new();
        FLEET.get_or_init(|| Fleet {
            inner: Mutex::new(Inner::default()),
            calls: Mutex::new(BTreeMap::new()),
            next_server: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `n` servers carrying `tags` (online, [`Behaviour::Succeed`], no
    /// certificate yet); returns their ids, sorted.
    pub fn add(&self, n: usize, tags: &[(&str, &str)], kind: Kind) -> Vec<String> {
        let mut inner = self.lock();
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let seq = self.next_server.fetch_add(1, Ordering::SeqCst);
            let id = match kind {
                Kind::Ec2 => format!("i-0f1ee7{seq:011x}"),
                Kind::OnPrem => format!("mi-0f1ee7{seq:011x}"),
            };
            let server = Server::new(&id, seq, kind, tags);
            inner.servers.insert(id.clone(), server);
            ids.push(id);
        }
        ids
    }

    /// Removes a server (it leaves the fleet: later commands do not reach it; the
    /// invocations it already has stay). True if it was there.
    pub fn remove(&self, id: &str) -> bool {
        self.lock().servers.remove(id).is_some()
    }

    /// The ids of the servers carrying tag `key=value`, sorted.
    pub fn tagged(&self, key: &str, value: &str) -> Vec<String> {
        self.lock()
            .servers
            .values()
            .filter(|s| s.has_tag(key, value))
            .map(|s| s.id.clone())
            .collect()
    }

    /// Sets how server `id` answers the commands sent from now on. False if unknown.
    pub fn set_behaviour(&self, id: &str, behaviour: Behaviour) -> bool {
        match self.lock().servers.get_mut(id) {
            Some(s) => {
                s.behaviour = behaviour;
                true
            }
            None => false,
        }
    }

    /// Sets how long server `id` takes to run a command sent from now on. False if unknown.
    pub fn set_latency(&self, id: &str, latency: Duration) -> bool {
        match self.lock().servers.get_mut(id) {
            Some(s) => {
                s.latency = Some(latency);
                true
            }
            None => false,
        }
    }

    /// Sets the latency of every server carrying tag `key=value`; returns how many.
    pub fn set_latency_tagged(&self, key: &str, value: &str, latency: Duration) -> usize {
        let mut inner = self.lock();
        let mut n = 0;
        for s in inner.servers.values_mut().filter(|s| s.has_tag(key, value)) {
            s.latency = Some(latency);
            n += 1;
        }
        n
    }

    /// The latency of servers without one of their own (zero unless set).
    pub fn set_default_latency(&self, latency: Duration) {
        self.lock().default_latency = latency;
    }

    /// Every command server `id` received, in the order sent (empty for an unknown id).
    pub fn received(&self, id: &str) -> Vec<Received> {
        self.lock()
            .servers
            .get(id)
            .map(|s| s.received.clone())
            .unwrap_or_default()
    }

    /// The serial server `id` has installed now (openssl's format), if any.
    pub fn installed_serial(&self, id: &str) -> Option<String> {
        let mut inner = self.lock();
        inner.settle(Instant::now());
        inner.servers.get(id).and_then(|s| s.installed.clone())
    }

    /// Sets the serial server `id` has installed (as if installed before the test). False
    /// if unknown.
    pub fn set_installed_serial(&self, id: &str, serial: Option<&str>) -> bool {
        let mut inner = self.lock();
        inner.settle(Instant::now());
        match inner.servers.get_mut(id) {
            Some(s) => {
                s.installed = serial.map(str::to_string);
                true
            }
            None => false,
        }
    }

    /// The commands delivered to any server carrying tag `key=value`, in the order sent.
    pub fn commands_for_tag(&self, key: &str, value: &str) -> Vec<CommandSummary> {
        let mut inner = self.lock();
        let now = Instant::now();
        inner.settle(now);
        let tagged: Vec<String> = inner
            .servers
            .values()
            .filter(|s| s.has_tag(key, value))
            .map(|s| s.id.clone())
            .collect();
        inner
            .commands
            .iter()
            .filter(|c| {
                c.invocations
                    .iter()
                    .any(|i| tagged.contains(&i.instance_id))
            })
            .map(|c| c.summary(now))
            .collect()
    }

    /// The commands of document `name`, in the order sent.
    pub fn commands_of_document(&self, name: &str) -> Vec<CommandSummary> {
        let mut inner = self.lock();
        let now = Instant::now();
        inner.settle(now);
        inner
            .commands
            .iter()
            .filter(|c| c.document_name == name)
            .map(|c| c.summary(now))
            .collect()
    }

    /// The command `command_id`, if the fleet has it.
    pub fn command(&self, command_id: &str) -> Option<CommandSummary> {
        let mut inner = self.lock();
        let now = Instant::now();
        inner.settle(now);
        inner.command(command_id).map(|c| c.summary(now))
    }

    /// How many `op` calls (`SendCommand`, `ListCommandInvocations`, …) the fleet answered
    /// (errors included; calls the proxy's rules answered instead are not).
    pub fn calls(&self, op: &str) -> u64 {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(op)
            .copied()
            .unwrap_or(0)
    }

    /// Every operation's count of answered calls.
    pub fn call_counts(&self) -> BTreeMap<String, u64> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn count_call(&self, op: &str) {
        *self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(op.to_string())
            .or_insert(0) += 1;
    }
}

/// A serial in openssl's format (`openssl x509 -serial`): uppercase hex without colons.
/// ACM's `0a:1b:…` loses its colons; the emulator's decimal serials are converted.
pub fn openssl_serial(serial: &str) -> Option<String> {
    let s = serial.trim();
    if s.is_empty() {
        return None;
    }
    let hex_pairs = s.contains(':') && s.split(':').all(|p| p.len() == 2 && is_hex(p));
    if hex_pairs {
        return Some(s.replace(':', "").to_ascii_uppercase());
    }
    if s.chars().all(|c| c.is_ascii_digit()) {
        return Some(decimal_to_hex(s));
    }
    if is_hex(s) {
        return Some(s.to_ascii_uppercase());
    }
    None
}

/// The serial of the first certificate in `pem`, in openssl's format; `None` if it is not
/// a PEM certificate.
pub fn pem_serial(pem: &str) -> Option<String> {
    use base64::Engine;
    let body = pem
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)?
        .split("-----END CERTIFICATE-----")
        .next()?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
    // serialNumber INTEGER, … } … }
    let (tag, cert, _) = der_item(&der)?;
    (tag == 0x30).then_some(())?;
    let (tag, tbs, _) = der_item(cert)?;
    (tag == 0x30).then_some(())?;
    let (mut tag, mut value, rest) = der_item(tbs)?;
    if tag == 0xa0 {
        (tag, value, _) = der_item(rest)?;
    }
    (tag == 0x02).then_some(())?;
    let digits: Vec<u8> = value.iter().copied().skip_while(|b| *b == 0).collect();
    if digits.is_empty() {
        return Some("00".into());
    }
    Some(digits.iter().map(|b| format!("{b:02X}")).collect())
}

/// One DER item: its tag, its value and what follows it.
fn der_item(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *der.first()?;
    let first = *der.get(1)?;
    let (len, start) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for b in der.get(2..2 + n)? {
            len = (len << 8) | usize::from(*b);
        }
        (len, 2 + n)
    };
    let value = der.get(start..start.checked_add(len)?)?;
    Some((tag, value, &der[start + len..]))
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// A (long) decimal number in uppercase hex, an even number of digits as openssl prints.
fn decimal_to_hex(dec: &str) -> String {
    let mut digits: Vec<u32> = dec.bytes().map(|b| u32::from(b - b'0')).collect();
    let mut out = Vec::new();
    while digits.iter().any(|d| *d != 0) {
        let mut rem = 0;
        let mut next = Vec::with_capacity(digits.len());
        for d in &digits {
            let cur = rem * 10 + d;
            let q = cur / 16;
            rem = cur % 16;
            if !(next.is_empty() && q == 0) {
                next.push(q);
            }
        }
        out.push(
            char::from_digit(rem, 16)
                .unwrap_or('0')
                .to_ascii_uppercase(),
        );
        digits = next;
    }
    if out.is_empty() {
        out.push('0');
    }
    if out.len() % 2 == 1 {
        out.push('0');
    }
    out.iter().rev().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_come_out_as_openssl_prints_them() {
        assert_eq!(openssl_serial("0a:1b:ff").as_deref(), Some("0A1BFF"));
        assert_eq!(openssl_serial("255").as_deref(), Some("FF"));
        assert_eq!(openssl_serial("4096").as_deref(), Some("1000"));
        assert_eq!(openssl_serial("0").as_deref(), Some("00"));
        assert_eq!(
            openssl_serial("340282366920938463463374607431768211455").as_deref(),
            Some("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF")
        );
        assert_eq!(openssl_serial("$(x)"), None);
        // What `openssl x509 -serial` prints for it (the DER has a leading zero byte).
        let pem = "-----BEGIN CERTIFICATE-----\nMIIBfDCCASKgAwIBAgIRAI8KGyw9Tl9gcYKTpLXG1+gwCgYIKoZIzj0EAwIwFTET\nMBEGA1UEAwwKZmxlZXQtdGVzdDAeFw0yNjEyMDUwNzQzMTJaFw0yNjEyMDYwNzQz\nMTJaMBUxEzARBgNVBAMMCmZsZWV0LXRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMB\nBwNCAAR3v2PPrJ65v9oeuRXpIdd0SoSxMt1PQw7lOqH9CT3PlR5oU7TKA3+xCNd0\n5xjBs023Ziuakym71SITcRQV2Nsyo1MwUTAdBgNVHQ4EFgQU1wg71Epj/Ust0Soj\nP6FRDp66qNAwHwYDVR0jBBgwFoAU1wg71Epj/Ust0SojP6FRDp66qNAwDwYDVR0T\nAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEAxLcggHKT0fB5EMq4O6qFiA8/\nA1gRz7dicsonwXvMTOoCID+pcXJqUnw+1p6mxa2LVgwPlM+vaZvufCVxeMf6/2Ao\n-----END CERTIFICATE-----\n";
        assert_eq!(
            pem_serial(pem).as_deref(),
            Some("8F0A1B2C3D4E5F60718293A4B5C6D7E8")
        );
        assert_eq!(
            pem_serial("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"),
            None
        );
        assert_eq!(pem_serial("x"), None);
        assert_eq!(openssl_serial(""), None);
    }
}
