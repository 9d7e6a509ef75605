//! The few etcd v3 calls the fleet needs, through etcd's JSON gateway (`/v3/kv/range`,
//! `/v3/kv/txn`, `/v3/watch`; in etcd since 3.3, base64 keys and values, 64-bit numbers as
//! strings) over HTTP/1.1 with optional TLS client certificates. Every call has a deadline:
//! a member that accepts a connection and never answers costs one `call_timeout`, then the
//! next endpoint is tried. Reads are linearizable (etcd's default), so a member cut off from
//! the quorum answers nothing stale.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::config::FleetConfig;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint answered in time (connection refused, reset, timed out).
    #[error("no etcd endpoint answered: {0}")]
    Unreachable(String),
    /// An endpoint answered with an error (no leader, request timed out, permission denied).
    #[error("etcd refused the call: {0}")]
    Refused(String),
    #[error("cannot set up the etcd client: {0}")]
    Setup(String),
}

/// A key's value and its version (how many times it was written since it was created; 0:
/// absent), as a compare-on-version transaction needs them; and the store's revision at the
/// read, from which a watch sees every later change.
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    pub value: Option<Vec<u8>>,
    pub version: i64,
    pub revision: i64,
}

#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    endpoints: Vec<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl Client {
    /// A client for `config`'s endpoints; reads its TLS files now.
    pub fn new(config: &FleetConfig) -> Result<Client, EtcdError> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = &config.ca_file {
            let pem = read(ca)?;
            let certs = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| EtcdError::Setup(format!("{}: {e}", ca.display())))?;
            if certs.is_empty() {
                return Err(EtcdError::Setup(format!(
                    "{} holds no PEM certificate",
                    ca.display()
                )));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        if let Some((cert, key)) = &config.client_cert {
            let chain = ureq::tls::parse_pem(&read(cert)?)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect::<Vec<_>>();
            let key = ureq::tls::PrivateKey::from_pem(&read(key)?)
                .map_err(|e| EtcdError::Setup(format!("{}: {e}", key.display())))?;
            tls = tls.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, key)));
        }
        let agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_global(Some(config.call_timeout))
            .max_idle_connections_per_host(2)
            .build()
            .new_agent();
        Ok(Client {
            agent,
            endpoints: config.endpoints.clone(),
        })
    }

    /// `key`'s value, version and the revision of the read.
    pub fn get(&self, key: &str) -> Result<Read, EtcdError> {
        let answer = self.call("/v3/kv/range", &json!({ "key": B64.encode(key) }))?;
        let revision = int(&answer["header"]["revision"]);
        let Some(kv) = answer["kvs"].as_array().and_then(|kvs| kvs.first()) else {
            return Ok(Read {
                value: None,
                version: 0,
                revision,
            });
        };
        let value = B64
            .decode(kv["value"].as_str().unwrap_or_default())
            .map_err(|e| EtcdError::Refused(format!("a value that is not base64 ({e})")))?;
        Ok(Read {
            value: Some(value),
            version: int(&kv["version"]),
            revision,
        })
    }

    /// Writes `value` to `key` if its version is still `version` (0: the key is absent);
    /// whether it was written.
    pub fn put_if_version(&self, key: &str, version: i64, value: &str) -> Result<bool, EtcdError> {
        let key = B64.encode(key);
        let answer = self.call(
            "/v3/kv/txn",
            &json!({
                "compare": [{
                    "key": key,
                    "target": "VERSION",
                    "result": "EQUAL",
                    "version": version.to_string(),
                }],
                "success": [{ "request_put": { "key": key, "value": B64.encode(value) } }],
            }),
        )?;
        // proto3 JSON leaves out false.
        Ok(answer["succeeded"].as_bool().unwrap_or(false))
    }

    /// Every key under `prefix` with its value, in key order.
    pub fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, EtcdError> {
        let answer = self.call(
            "/v3/kv/range",
            &json!({ "key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix)) }),
        )?;
        let kvs = answer["kvs"].as_array().cloned().unwrap_or_default();
        Ok(kvs
            .iter()
            .filter_map(|kv| {
                let key = B64.decode(kv["key"].as_str()?).ok()?;
                let value = B64.decode(kv["value"].as_str().unwrap_or_default()).ok()?;
                Some((String::from_utf8(key).ok()?, value))
            })
            .collect())
    }

    /// Writes `value` to `key`, tied to `lease` (0: none; the key then stays until deleted).
    pub fn put(&self, key: &str, value: &str, lease: i64) -> Result<(), EtcdError> {
        let mut body = json!({ "key": B64.encode(key), "value": B64.encode(value) });
        if lease != 0 {
            body["lease"] = lease.to_string().into();
        }
        self.call("/v3/kv/put", &body).map(drop)
    }

    /// A new lease that expires `ttl` after its last keep-alive; its id.
    pub fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let answer = self.call(
            "/v3/lease/grant",
            &json!({ "TTL": ttl.as_secs().to_string() }),
        )?;
        match int(&answer["ID"]) {
            0 => Err(EtcdError::Refused("no lease granted".into())),
            id => Ok(id),
        }
    }

    /// Keeps `lease` alive; whether it still exists (it expired if not).
    pub fn keep_alive(&self, lease: i64) -> Result<bool, EtcdError> {
        let answer = self.call("/v3/lease/keepalive", &json!({ "ID": lease.to_string() }))?;
        Ok(int(&answer["result"]["TTL"]) > 0)
    }

    /// Returns once `key` changes after `revision`, or after `span` (whichever comes first),
    /// or at once if no endpoint takes the watch: the caller reads the key again in every
    /// case. Returns whether a change was seen.
    /// `prefix`: every key that starts with `key` instead of `key` alone.
    pub fn watch(
        &self,
        key: &str,
        prefix: bool,
        after_revision: i64,
        span: Duration,
    ) -> Result<bool, EtcdError> {
        let mut create = json!({
            "key": B64.encode(key),
            "start_revision": (after_revision + 1).to_string(),
        });
        if prefix {
            create["range_end"] = B64.encode(prefix_end(key)).into();
        }
        let body = json!({ "create_request": create });
        let mut last = String::new();
        for endpoint in &self.endpoints {
            let started = Instant::now();
            let response = self
                .agent
                .post(format!("{endpoint}/v3/watch"))
                .config()
                .timeout_global(Some(span))
                .build()
                .header("Content-Type", "application/json")
                .send(body.to_string());
            let response = match response {
                Ok(r) if r.status() == 200 => r,
                Ok(r) => {
                    last = format!("{endpoint}: HTTP {}", r.status());
                    continue;
                }
                Err(e) => {
                    last = format!("{endpoint}: {e}");
                    continue;
                }
            };
            // One JSON document per line: first `created`, then changes.
            let lines = BufReader::new(response.into_body().into_reader()).lines();
            for line in lines {
                let Ok(line) = line else {
                    // The span ended (or the member went away): look again.
                    return Ok(false);
                };
                let Ok(doc) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let result = &doc["result"];
                let changed = result["events"].as_array().is_some_and(|e| !e.is_empty());
                if changed
                    || result["canceled"].as_bool() == Some(true)
                    || doc.get("error").is_some()
                {
                    return Ok(changed);
                }
            }
            if started.elapsed() < span / 2 {
                last = format!("{endpoint}: the watch ended early");
                continue;
            }
            return Ok(false);
        }
        Err(EtcdError::Unreachable(last))
    }

    /// POSTs `body` to `path` on each endpoint in turn until one answers 200; each try has
    /// the client's deadline.
    fn call(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let mut failures = Vec::new();
        let mut refused = None;
        for endpoint in &self.endpoints {
            let response = self
                .agent
                .post(format!("{endpoint}{path}"))
                .header("Content-Type", "application/json")
                .send(body.to_string());
            let mut response = match response {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{endpoint}: {e}"));
                    continue;
                }
            };
            let status = response.status();
            let text = match response.body_mut().read_to_string() {
                Ok(text) => text,
                Err(e) => {
                    failures.push(format!("{endpoint}: {e}"));
                    continue;
                }
            };
            let doc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if status == 200 {
                return Ok(doc);
            }
            // A member without a leader or outside the quorum refuses; another may not.
            let message = doc["message"]
                .as_str()
                .or(doc["error"].as_str())
                .unwrap_or(text.trim())
                .to_owned();
            failures.push(format!("{endpoint}: {message}"));
            refused = Some(format!("{endpoint}: HTTP {status}: {message}"));
        }
        match refused {
            Some(message) if failures.len() == 1 => Err(EtcdError::Refused(message)),
            _ => Err(EtcdError::Unreachable(failures.join("; "))),
        }
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path)
        .map_err(|e| EtcdError::Setup(format!("cannot read {}: {e}", path.display())))
}

/// The end of the range of keys that start with `prefix` (etcd's `range_end`): the prefix
/// with its last byte raised by one.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

/// A gateway number: int64 fields come as strings, absent ones are 0.
fn int(value: &Value) -> i64 {
    match value {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_numbers_come_as_strings_or_not_at_all() {
        assert_eq!(int(&json!("42")), 42);
        assert_eq!(int(&json!(7)), 7);
        assert_eq!(int(&Value::Null), 0);
    }

    #[test]
    fn a_prefix_range_ends_just_past_the_prefix() {
        assert_eq!(prefix_end("a/b/"), b"a/b0");
        assert_eq!(prefix_end("az"), b"a{");
    }
}
