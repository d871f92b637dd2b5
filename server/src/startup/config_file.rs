//! `--config-file`: etcd's YAML configuration file, turned into the flags it stands for.
//!
//! As in etcd, the file is the whole configuration: when it is given, other flags and the
//! `ETCD_*` variables are ignored. Its keys are the flags' names (`name`, `data-dir`,
//! `initial-cluster`, `log-outputs`, `experimental-...`), lists are joined with commas, and
//! TLS settings are nested as etcd nests them:
//!
//! ```yaml
//! client-transport-security:   # → --cert-file, --key-file, --client-cert-auth, ...
//!   cert-file: server.crt
//!   client-cert-auth: true
//! peer-transport-security:     # → --peer-cert-file, --peer-client-cert-auth, ...
//!   trusted-ca-file: ca.crt
//! ```
//!
//! Keys cairn does not know are reported (etcd ignores unknown keys as well).

use std::ffi::OsString;
use std::path::Path;

use serde_yaml::Value;

/// The flags a configuration file stands for, and the keys it holds that no flag has.
#[derive(Debug, Default, PartialEq)]
pub struct FileFlags {
    /// `--flag=value` arguments, in file order.
    pub args: Vec<OsString>,
    /// Keys no cairn flag has (`peer-transport-security.x` for nested ones).
    pub unknown: Vec<String>,
}

/// Reads the file at `path` and maps it (see the module docs); `known` are the flag names.
pub fn read(path: &Path, known: &[String]) -> Result<FileFlags, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read --config-file {}: {e}", path.display()))?;
    parse(&text, known).map_err(|e| format!("--config-file {}: {e}", path.display()))
}

/// Maps YAML text to flags (see the module docs).
pub fn parse(text: &str, known: &[String]) -> Result<FileFlags, String> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let mut out = FileFlags::default();
    let map = match doc {
        Value::Mapping(m) => m,
        Value::Null => return Ok(out),
        _ => return Err("the file must hold a mapping of flag names to values".into()),
    };
    for (key, value) in map {
        let key = scalar(&key).ok_or("a key must be a string")?;
        match key.as_str() {
            "client-transport-security" => nested(&mut out, &key, "", &value, known)?,
            "peer-transport-security" => nested(&mut out, &key, "peer-", &value, known)?,
            _ => add(&mut out, &key, &key, &value, known)?,
        }
    }
    Ok(out)
}

/// A transport-security section; `prefix` is `peer-` for the peer section.
fn nested(out: &mut FileFlags, section: &str, prefix: &str, value: &Value, known: &[String]) -> Result<(), String> {
    let map = match value {
        Value::Mapping(m) => m,
        Value::Null => return Ok(()),
        _ => return Err(format!("{section} must be a mapping")),
    };
    for (key, value) in map {
        let key = scalar(key).ok_or("a key must be a string")?;
        let flag = match (prefix, key.as_str()) {
            ("", "crl-file") => "client-crl-file".to_owned(),
            ("", "allowed-hostname") => "client-cert-allowed-hostname".to_owned(),
            ("peer-", "allowed-cn") => "peer-cert-allowed-cn".to_owned(),
            ("peer-", "allowed-hostname") => "peer-cert-allowed-hostname".to_owned(),
            ("peer-", "skip-client-san-verification") => "experimental-peer-skip-client-san-verification".to_owned(),
            (p, k) => format!("{p}{k}"),
        };
        add(out, &format!("{section}.{key}"), &flag, value, known)?;
    }
    Ok(())
}

fn add(out: &mut FileFlags, key: &str, flag: &str, value: &Value, known: &[String]) -> Result<(), String> {
    let text = match value {
        Value::Null => return Ok(()),
        Value::Sequence(items) => items
            .iter()
            .map(|v| scalar(v).ok_or_else(|| format!("{key}: list items must be scalars")))
            .collect::<Result<Vec<_>, _>>()?
            .join(","),
        v => scalar(v).ok_or_else(|| format!("{key}: expected a scalar or a list"))?,
    };
    if known.iter().any(|k| k == flag) {
        out.args.push(OsString::from(format!("--{flag}={text}")));
    } else {
        out.unknown.push(key.to_owned());
    }
    Ok(())
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        ["name", "data-dir", "listen-client-urls", "cert-file", "client-cert-auth", "peer-trusted-ca-file", "peer-cert-allowed-cn", "snapshot-count"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn keys_lists_and_nested_sections_become_flags() {
        let f = parse(
            "name: infra1\nsnapshot-count: 10000\nlisten-client-urls: [http://a:1, http://b:2]\n\
             client-transport-security:\n  cert-file: s.crt\n  client-cert-auth: true\n\
             peer-transport-security:\n  trusted-ca-file: ca.crt\n  allowed-cn: etcd\n\
             data-dir:\nsome-future-key: 1\n",
            &known(),
        )
        .unwrap();
        let args: Vec<String> = f.args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            [
                "--name=infra1",
                "--snapshot-count=10000",
                "--listen-client-urls=http://a:1,http://b:2",
                "--cert-file=s.crt",
                "--client-cert-auth=true",
                "--peer-trusted-ca-file=ca.crt",
                "--peer-cert-allowed-cn=etcd",
            ]
        );
        assert_eq!(f.unknown, ["some-future-key"]);
    }

    #[test]
    fn malformed_files_are_errors() {
        assert!(parse("- a\n- b\n", &known()).is_err());
        assert!(parse("name: [a, {b: c}]\n", &known()).is_err());
        assert!(parse("name: 'unterminated\n", &known()).is_err());
        assert_eq!(parse("", &known()).unwrap(), FileFlags::default());
    }
}
