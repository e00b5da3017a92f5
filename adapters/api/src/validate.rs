//! Checks shared by every configuration (the agent's and each adapter's):
//! network addresses, identifiers and free text. Errors say what is wrong
//! and what is allowed; callers add the key and the line.

/// Checks `host:port` (`name:port`, `1.2.3.4:port`, `[v6]:port`): a port
/// from 1 to 65535 and a host that is an IP address or a DNS name.
pub fn host_port(s: &str) -> Result<(), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| "use host:port, e.g. 192.168.1.20:502".to_string())?;
    match port.parse::<u16>() {
        Ok(p) if p >= 1 => {}
        _ => return Err(format!("port {port:?}: use a number from 1 to 65535")),
    }
    if let Some(inner) = host.strip_prefix('[') {
        let v6 = inner
            .strip_suffix(']')
            .ok_or_else(|| format!("host {host:?}: an IPv6 address is written [addr]:port"))?;
        return v6
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| format!("host {host:?} is not an IPv6 address"));
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    dns_name(host)
}

/// A DNS name: labels of 1-63 letters, digits and '-', not starting or
/// ending with '-', at most 253 characters.
pub fn dns_name(host: &str) -> Result<(), String> {
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || host.len() > 253 || !host.trim_end_matches('.').split('.').all(ok_label) {
        return Err(format!(
            "host {host:?}: use an IP address or a DNS name (letters, digits, '-' and '.'; an IPv6 address as [addr])"
        ));
    }
    Ok(())
}

/// An identifier (asset id, field, device name): 1-64 ASCII letters,
/// digits, '-', '_' or '.'. They travel in URLs, SQL and OPC UA node ids.
pub fn ident(s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 64
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(format!(
            "{s:?}: use 1-64 characters of ASCII letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

/// Free text (names, products, units): at most 200 characters and no
/// control characters (a NUL byte is refused by PostgreSQL downstream).
pub fn text(s: &str) -> Result<(), String> {
    if s.chars().any(|c| c.is_control()) {
        return Err(format!("{s:?} contains a control character"));
    }
    if s.chars().count() > 200 {
        return Err("is longer than 200 characters".into());
    }
    Ok(())
}

/// A finite number from `lo` to `hi`.
pub fn finite_in(v: f64, lo: f64, hi: f64) -> Result<(), String> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "{v} is out of range: use a number from {lo} to {hi}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_for_a_real_host_and_port() {
        for ok in [
            "127.0.0.1:502",
            "atg.site.local:10001",
            "[::1]:7443",
            "[fe80::1]:502",
            "headend:1",
        ] {
            assert!(host_port(ok).is_ok(), "{ok}");
        }
        for bad in [
            "::::",
            "host:99999",
            "host:0",
            "host:",
            ":502",
            "nohost",
            "[::1:502",
            "[zz]:502",
            "a b:502",
            "host\u{0}:502",
            "-bad-:502",
            "1.2.3:502x",
        ] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn identifiers_and_text_refuse_control_characters() {
        assert!(ident("tank-1").is_ok() && ident("alarm.high_level").is_ok());
        for bad in ["", "tank 1", "tank\u{0}", "t/1", &"x".repeat(65), "tänk"] {
            assert!(ident(bad).is_err(), "{bad:?}");
        }
        assert!(text("Diesel B7 — Zürich").is_ok());
        assert!(text("a\u{0}b").is_err() && text("a\nb").is_err());
        assert!(text(&"x".repeat(201)).is_err());
        assert!(finite_in(5.0, 0.0, 10.0).is_ok());
        assert!(finite_in(f64::INFINITY, 0.0, 1e12).is_err());
        assert!(finite_in(-1.0, 0.0, 1e12).is_err());
    }
}
