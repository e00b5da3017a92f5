//! `edge-agent probe` as an installer runs it (the real binary): each
//! protocol against its simulator or an independent peer, and the errors
//! an installer meets (a closed port, a device that does not answer, a
//! Modbus exception, an untrusted certificate), each with its own exit
//! status and words.
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use atg_sim::veeder_root::Fault;
use e2e::*;

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `edge-agent probe ARGS`; returns (exit status, stdout, stderr).
async fn probe<S: AsRef<str>>(args: &[S]) -> Result<(i32, String, String)> {
    let mut cmd = Command::new(bin("edge-agent"));
    cmd.arg("probe").args(args.iter().map(AsRef::as_ref));
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Runs a probe that must fail with exit status `code` and say `needle`.
async fn fails(args: &[&str], code: i32, needle: &str) -> Result<()> {
    let (got, out, err) = probe(args).await?;
    ensure!(
        got == code && err.contains(needle),
        "probe {args:?}: want exit {code} saying {needle:?}, got {got}: {out}{err}"
    );
    Ok(())
}

fn closed_port() -> Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let a = l.local_addr()?.to_string();
    drop(l);
    Ok(a)
}

/// A listener that accepts and never says a word.
fn mute_listener() -> Result<(std::net::TcpListener, SocketAddr)> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let a = l.local_addr()?;
    Ok((l, a))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_modbus_probe_reads_registers_and_names_an_exception_a_closed_port_and_a_timeout()
-> Result<()> {
    let sim = fast_sim().await?;
    sim.set_frozen(true);
    let addr = sim.addr.to_string();
    let (code, out, err) = probe(&[
        "modbus",
        &addr,
        "--unit",
        "1",
        "--read",
        "holding:0..4",
        "--type",
        "f32",
    ])
    .await?;
    ensure!(code == 0, "{code}: {out}{err}");
    let volume = sim.tanks()[0].volume as f32;
    ensure!(
        out.contains(&format!("{volume}")),
        "the first tank's volume {volume}: {out}"
    );
    fails(
        &["modbus", &addr, "--read", "holding:60000..60002"],
        6,
        "exception 2 (illegal data address",
    )
    .await?;
    fails(
        &["modbus", &closed_port()?, "--read", "holding:0"],
        3,
        "connection refused",
    )
    .await?;
    let (_mute, m) = mute_listener()?;
    fails(
        &["modbus", &m.to_string(), "--timeout-ms", "500"],
        4,
        "no answer within 500 ms",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_veeder_root_probe_prints_both_formats_reads_a_slow_line_and_names_refusals_a_missing_security_code_and_silence()
-> Result<()> {
    let sim = fast_sim().await?;
    sim.set_frozen(true);
    let vr = sim
        .start_veeder_root("127.0.0.1:0".parse()?)
        .await?
        .to_string();
    let (code, out, err) = probe(&["veeder-root", &vr, "--cmd", "i20100"]).await?;
    ensure!(
        code == 0 && out.contains("in-tank inventory") && out.contains("&&"),
        "{code}: {out}{err}"
    );
    let (code, out, _) = probe(&["veeder-root", &vr, "--cmd", "I20100"]).await?;
    ensure!(
        code == 0 && out.contains("IN-TANK INVENTORY") && out.contains("DIESEL"),
        "{out}"
    );
    sim.inject_veeder_root(Fault::Unsupported);
    fails(&["veeder-root", &vr, "--cmd", "i20500"], 6, "9999FF1B").await?;
    sim.inject_veeder_root(Fault::BadChecksum);
    fails(&["veeder-root", &vr], 6, "bad checksum").await?;
    sim.inject_veeder_root(Fault::BadChecksum);
    fails(&["veeder-root", &vr], 6, "raw reply: <SOH>i20100").await?;
    // a 9600-baud console behind a bridge: the whole reply takes longer
    // than the timeout, but bytes keep coming; only silence is a timeout
    for t in 0..4 {
        for k in 0..3 {
            sim.record_delivery_at(t, 100.0, 3_600_000 * k, 3_600_000 * k + 600_000);
        }
    }
    sim.set_veeder_root_baud(Some(9600));
    let t0 = std::time::Instant::now();
    let (code, out, err) =
        probe(&["veeder-root", &vr, "--cmd", "i20200", "--timeout-ms", "500"]).await?;
    let took = t0.elapsed();
    ensure!(
        code == 0 && out.contains("3 deliveries"),
        "{code}: {out}{err}"
    );
    ensure!(
        took > Duration::from_millis(1000),
        "the reply took twice the timeout and more: {took:?}"
    );
    sim.set_veeder_root_baud(None);
    // a console with a security code: refused without it, answered with it
    sim.set_veeder_root_security_code(Some("ABC123"));
    fails(
        &["veeder-root", &vr, "--timeout-ms", "1000"],
        6,
        "security code",
    )
    .await?;
    let (code, out, err) = probe(&["veeder-root", &vr, "--security-code", "ABC123"]).await?;
    ensure!(
        code == 0 && out.contains("in-tank inventory"),
        "{code}: {out}{err}"
    );
    sim.set_veeder_root_security_code(None);
    sim.inject_veeder_root(Fault::Silent);
    fails(
        &["veeder-root", &vr, "--timeout-ms", "500"],
        4,
        "no reply to i20100 within 500 ms",
    )
    .await?;
    fails(&["veeder-root", &closed_port()?], 3, "connection refused").await?;
    fails(
        &["veeder-root", &vr, "--cmd", "i99900"],
        2,
        "not a command this probe reads",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mqtt_probe_prints_what_arrives_and_names_an_untrusted_broker_and_a_wrong_password()
-> Result<()> {
    let topic = format!("probe{}/tank1/volume", std::process::id());
    let filter = format!("probe{}/#", std::process::id());
    let mut child = Command::new(bin("edge-agent"))
        .args([
            "probe",
            "mqtt",
            "mqtt://127.0.0.1:1883",
            "--topic",
            &filter,
            "--seconds",
            "4",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // publish (retained, so it arrives even if the probe subscribes late)
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            "1883",
            "-r",
            "-t",
            &topic,
            "-m",
            "1234.5",
        ])
        .status()?;
    ensure!(st.success(), "mosquitto_pub");
    let out = tokio::task::spawn_blocking(move || {
        let _ = child.wait();
        child.wait_with_output()
    })
    .await??;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.code() == Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        text.contains(&topic) && text.contains("\"1234.5\""),
        "{text}"
    );
    // clear the retained message
    let _ = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", "1883", "-r", "-n", "-t", &topic])
        .status();

    // a TLS broker that wants a user and password, its certificate from
    // another CA than the one we trust
    let ours = TestPki::new(&["x"])?;
    let theirs = TestPki::new(&["y"])?;
    let work = tempfile::tempdir()?;
    let port = free_port();
    let p = theirs.path();
    let passwords = work.path().join("passwords");
    let st = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwords)
        .args(["tank", "s3cret"])
        .status()?;
    ensure!(st.success(), "mosquitto_passwd");
    let conf = work.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "user root\nallow_anonymous false\npassword_file {}\nlistener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
            passwords.display(),
            p.join("ca.pem").display(),
            p.join("headend.pem").display(),
            p.join("headend.key").display()
        ),
    )?;
    let _broker = Killed(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let mut up = false;
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ensure!(up, "mosquitto with TLS did not listen");
    let url = format!("mqtts://localhost:{port}");
    let (right, wrong) = (work.path().join("right"), work.path().join("wrong"));
    std::fs::write(&right, "s3cret\n")?;
    std::fs::write(&wrong, "guess\n")?;
    let with = |ca: &std::path::Path, pass: &std::path::Path| -> Vec<String> {
        [
            "mqtt",
            &url,
            "--topic",
            "x/#",
            "--seconds",
            "1",
            "--user",
            "tank",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["--ca".into(), ca.display().to_string()])
        .chain(["--password-file".into(), pass.display().to_string()])
        .collect()
    };
    let right_ca = theirs.path().join("ca.pem");
    let (code, _, err) = probe(&with(&ours.path().join("ca.pem"), &right)).await?;
    ensure!(
        code == 5 && err.contains("TLS"),
        "an untrusted broker: {code}: {err}"
    );
    let (code, _, err) = probe(&with(&right_ca, &wrong)).await?;
    ensure!(
        code == 5 && err.contains("refused the connection"),
        "a wrong password: {code}: {err}"
    );
    let (code, out, err) = probe(&with(&right_ca, &right)).await?;
    ensure!(
        code == 0 && out.contains("connected and subscribed"),
        "{code}: {out}{err}"
    );
    fails(
        &[
            "mqtt",
            &format!("mqtt://{}", closed_port()?),
            "--topic",
            "x",
        ],
        3,
        "connection refused",
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opcua_probe_browses_and_reads_an_asyncua_server_and_names_an_untrusted_certificate_and_a_wrong_password()
-> Result<()> {
    let work = tempfile::tempdir()?;
    let port = free_port();
    let server_pki = work.path().join("server-pki");
    let _server = LinePeer::start(
        "opcua_server.py",
        &[
            port.to_string(),
            server_pki.display().to_string(),
            "sign_and_encrypt".into(),
        ],
        &[],
    )?;
    let url = format!("opc.tcp://127.0.0.1:{port}/tw/");
    let pki = work.path().join("agent-pki").display().to_string();
    // a first contact: the server's certificate is not trusted yet
    fails(
        &["opcua", &url, "--browse", "--pki-dir", &pki],
        5,
        "not trusted",
    )
    .await?;
    // the installer moves it from rejected/ to trusted/ (and the server trusts ours: asyncua accepts any)
    let rejected = std::path::Path::new(&pki).join("rejected");
    let trusted = std::path::Path::new(&pki).join("trusted");
    std::fs::create_dir_all(&trusted)?;
    let mut moved = 0;
    for e in std::fs::read_dir(&rejected).context("rejected/")? {
        let e = e?;
        std::fs::rename(e.path(), trusted.join(e.file_name()))?;
        moved += 1;
    }
    ensure!(moved == 1, "one rejected certificate, moved {moved}");
    let (code, out, err) = probe(&[
        "opcua",
        &url,
        "--browse",
        "--pki-dir",
        &pki,
        "--read",
        "nsu=urn:tankwatch:test:site;s=Tank1.Temperature",
    ])
    .await?;
    ensure!(code == 0, "{code}: {out}{err}");
    ensure!(
        out.contains("urn:tankwatch:test:site") && out.contains("Volume"),
        "{out}"
    );
    ensure!(out.contains("= Float(15.5)"), "{out}");
    // a server that takes one user: same certificate (same server pki
    // folder), so trusted already; a wrong password is named as such
    let user_port = free_port();
    let _users = LinePeer::start(
        "opcua_server.py",
        &[
            user_port.to_string(),
            server_pki.display().to_string(),
            "sign_and_encrypt".into(),
            "--user".into(),
            "tank:s3cret".into(),
        ],
        &[],
    )?;
    let user_url = format!("opc.tcp://127.0.0.1:{user_port}/tw/");
    let (right, wrong) = (work.path().join("right"), work.path().join("wrong"));
    std::fs::write(&right, "s3cret\n")?;
    std::fs::write(&wrong, "guess\n")?;
    let as_user = |pass: &std::path::Path| {
        vec![
            "opcua".to_string(),
            user_url.clone(),
            "--pki-dir".into(),
            pki.clone(),
            "--user".into(),
            "tank".into(),
            "--password-file".into(),
            pass.display().to_string(),
            "--read".into(),
            "i=2258".into(),
        ]
    };
    let (code, _, err) = probe(&as_user(&wrong)).await?;
    ensure!(
        code == 5 && err.contains("check auth"),
        "a wrong password: {code}: {err}"
    );
    let (code, out, err) = probe(&as_user(&right)).await?;
    ensure!(
        code == 0 && out.contains("i=2258 = DateTime"),
        "{code}: {out}{err}"
    );
    fails(
        &["opcua", &url, "--pki-dir", &pki, "--read", "ns=2;s=Nope"],
        6,
        "BadNodeIdUnknown",
    )
    .await?;
    fails(
        &[
            "opcua",
            &format!("opc.tcp://{}/", closed_port()?),
            "--security",
            "none",
        ],
        3,
        "connection refused",
    )
    .await?;
    Ok(())
}
