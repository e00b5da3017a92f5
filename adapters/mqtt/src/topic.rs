//! MQTT topic filters: validation and matching (MQTT 3.1.1 §4.7), pure.

/// Checks a subscription filter: non-empty, at most 1024 bytes, no NUL,
/// `+` alone in its level, `#` alone and last.
pub fn check_filter(f: &str) -> Result<(), String> {
    if f.is_empty() || f.len() > 1024 || f.contains('\0') {
        return Err(format!("topic {f:?}: use 1-1024 bytes without NUL"));
    }
    let levels: Vec<&str> = f.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('#') && (*l != "#" || i != levels.len() - 1) {
            return Err(format!(
                "topic {f:?}: '#' must be a whole level and the last one"
            ));
        }
        if l.contains('+') && *l != "+" {
            return Err(format!("topic {f:?}: '+' must be a whole level"));
        }
    }
    Ok(())
}

/// Checks a topic to publish to: a filter without wildcards.
pub fn check_name(t: &str) -> Result<(), String> {
    check_filter(t)?;
    if t.contains(['+', '#']) {
        return Err(format!("topic {t:?}: a publish topic has no wildcards"));
    }
    Ok(())
}

/// Does `topic` match `filter`? Topics starting with `$` never match a
/// filter starting with a wildcard.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_like_the_mqtt_spec_says() {
        for (f, t, want) in [
            ("site/tank1/volume", "site/tank1/volume", true),
            ("site/+/volume", "site/tank1/volume", true),
            ("site/+/volume", "site/tank1/x/volume", false),
            ("site/#", "site/tank1/volume", true),
            ("site/#", "site", true),
            ("#", "$SYS/broker/load", false),
            ("+/x", "$SYS/x", false),
            ("site/tank1", "site/tank1/volume", false),
            ("site/tank1/volume", "site/tank1", false),
            ("a//b", "a//b", true),
            ("a/+/b", "a//b", true),
        ] {
            assert_eq!(matches(f, t), want, "{f} vs {t}");
        }
    }

    #[test]
    fn malformed_filters_are_refused() {
        for bad in ["", "a/#/b", "a/b#", "a+/b", "x\0y"] {
            assert!(check_filter(bad).is_err(), "{bad:?}");
        }
        assert!(check_filter("a/+/#").is_ok());
        assert!(check_name("a/+/b").is_err() && check_name("a/b").is_ok());
    }
}
