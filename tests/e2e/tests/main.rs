//! The end-to-end suite as one test program (one link instead of one per
//! file: 44 programs of ~140 MB each filled CI's disk). Each module is one
//! area; run one with `cargo test -p e2e --test e2e <module>::`.
//! Tests of one program share a process: a test uses its own ports,
//! directories, databases and MQTT topics, and never process-wide state.

mod access;
mod access_scoped;
mod alarm_mail;
mod alarms;
mod backfill;
mod backlog;
mod backup;
mod check_config;
mod clock_skew;
mod command_kills;
mod commands;
mod console;
mod console_work;
mod containers;
mod crash;
mod damaged_log;
mod db_outage;
mod db_refuses;
mod dead_task;
mod deployment;
mod disk_bound;
mod disk_full;
mod disk_full_reconnect;
mod enrollment;
mod failover;
mod forecast_regimes;
mod gaspot_peer;
mod idle_connections;
mod inventory;
mod inventory_accuracy;
mod listener_limits;
mod monitoring;
mod mqtt_peer;
mod mqtt_quirks;
mod opcua_node_peer;
mod opcua_peer;
mod opcua_server;
mod opcua_server_abuse;
mod opcua_server_trust;
mod openapi_contract;
mod outage;
mod packages;
mod pki_cli;
mod probe;
mod pymodbus_peer;
mod read_replica;
mod reconnect_soak;
mod refusal;
mod rest_edge;
mod restart_state;
mod runbook_drills;
mod session_takeover;
mod slice;
mod slow_link;
mod store_conformance;
mod stored_corruption;
mod systemd_unit;
mod tank_latency;
mod times_and_units;
mod veeder_root;
mod version_skew;
