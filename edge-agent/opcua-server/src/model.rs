//! The address space as a plan (pure): which folders and variables mirror
//! the site's normalized model, their node ids, names, types, engineering
//! units and ranges. The shell (`nodes.rs`) turns the plan into nodes.
//!
//! ```text
//! Objects/Site/<site>/Tanks/<tank>/{Volume, TcVolume, Ullage, Height, WaterHeight,
//!                                    Temperature, Product, Capacity, Alarms/..., Delivery/InProgress}
//!                    /Controllers/<asset>/...   (and Meters, Sensors, Pumps)
//!                    /Deliveries/<load>/{Eta, EtaSource, PlannedVolume, Status}
//!                    /Agent/{HeadendConnected, LogEntries, LastAck, Devices/<device>/{Status, Connected, LastError}}
//! ```
//!
//! A field becomes a name by its parts: `water_height` → `WaterHeight`,
//! `alarm.high_level` → `Alarms/HighLevel`, `status.leak_test` →
//! `Status/LeakTest`. Node ids are strings in the agent's namespace: the
//! path from `Site`, e.g. `Site/site-1/Tanks/tank-1/Volume`.

use std::collections::HashSet;

/// What an asset is (its folder).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tank,
    Controller,
    Meter,
    Sensor,
    Pump,
}

impl Kind {
    pub fn folder(self) -> &'static str {
        match self {
            Kind::Tank => "Tanks",
            Kind::Controller => "Controllers",
            Kind::Meter => "Meters",
            Kind::Sensor => "Sensors",
            Kind::Pump => "Pumps",
        }
    }
}

/// The site as the agent's configuration describes it.
#[derive(Debug, Clone)]
pub struct Site {
    pub id: String,
    pub assets: Vec<Asset>,
    /// Device names (for `Agent/Devices/<device>`).
    pub devices: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Asset {
    pub id: String,
    pub kind: Kind,
    /// Display name (the id when empty).
    pub name: String,
    /// Tanks: the product, e.g. `diesel`.
    pub product: String,
    /// Tanks: nominal capacity in litres.
    pub capacity_l: Option<f64>,
    pub points: Vec<Point>,
}

/// One normalized point of an asset.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub field: String,
    /// Canonical unit (`L`, `mm`, `degC`, `kW`, `%`, `bool`, ``).
    pub unit: String,
    /// `Some` when OPC UA clients may write it: the point is writable and
    /// has safety limits (`setpoints:`), whose range is shown as EURange.
    pub write_range: Option<(Option<f64>, Option<f64>)>,
}

/// The data type of a variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Double,
    Boolean,
    String,
    DateTime,
    UInt64,
}

/// An engineering unit: UNECE common code and display name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    pub code: &'static str,
    pub display: &'static str,
    pub description: &'static str,
}

impl Unit {
    /// The OPC UA `UnitId` of a UNECE common code (Part 8, 5.6.3).
    pub fn unit_id(&self) -> i32 {
        self.code
            .bytes()
            .fold(0i32, |acc, b| (acc << 8) | i32::from(b))
    }
}

/// The engineering unit of a canonical unit, if it has one.
pub fn unit(canonical: &str) -> Option<Unit> {
    let (code, display, description) = match canonical {
        "L" => ("LTR", "L", "litre"),
        "mm" => ("MMT", "mm", "millimetre"),
        "degC" => ("CEL", "°C", "degree Celsius"),
        "kW" => ("KWT", "kW", "kilowatt"),
        "%" => ("P1", "%", "percent"),
        _ => return None,
    };
    Some(Unit {
        code,
        display,
        description,
    })
}

/// Where a variable's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Readings of `asset.field`.
    Reading { asset: String, field: String },
    /// Fixed at start (from the configuration).
    Fixed(Fixed),
    /// The agent's own state.
    Agent(AgentVar),
    /// A field of an expected delivery, set by the publisher once the
    /// node exists (until then: BadWaitingForInitialData, never an empty
    /// value with status Good).
    Delivery,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Fixed {
    Text(String),
    Number(f64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentVar {
    HeadendConnected,
    LogEntries,
    LastAck,
    DeviceStatus(String),
    DeviceConnected(String),
    DeviceLastError(String),
}

/// A folder or object in the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Folder {
    /// Node id text (the path).
    pub id: String,
    /// The browse name (ids: stable for clients that browse by path).
    pub name: String,
    /// The display name (an asset's configured name).
    pub display: String,
    /// Parent node id text; `None`: the Objects folder.
    pub parent: Option<String>,
}

/// A variable in the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Var {
    pub id: String,
    pub name: String,
    pub parent: String,
    pub ty: Type,
    pub unit: Option<Unit>,
    /// EURange, when known (a tank's volume: 0..capacity; a setpoint: its limits).
    pub range: Option<(f64, f64)>,
    pub writable: bool,
    pub source: Source,
}

/// The whole static address space.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub folders: Vec<Folder>,
    pub vars: Vec<Var>,
}

/// Two fields that would get the same name, or a name OPC UA paths cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

/// `water_height` → `WaterHeight`.
pub fn camel(s: &str) -> String {
    s.split(['_', '-'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

/// The folders (under the asset) and the variable name of a field.
pub fn field_path(field: &str) -> (Vec<String>, String) {
    let mut parts: Vec<&str> = field.split('.').collect();
    let last = camel(parts.pop().unwrap_or_default());
    let folders = parts
        .iter()
        .map(|p| match *p {
            "alarm" => "Alarms".to_string(),
            other => camel(other),
        })
        .collect();
    (folders, last)
}

fn check_segment(what: &str, s: &str) -> Result<(), PlanError> {
    if s.is_empty() || s.contains('/') || s.chars().any(char::is_control) {
        return Err(PlanError(format!(
            "{what} {s:?} cannot be an OPC UA name (empty, a '/' or a control character)"
        )));
    }
    Ok(())
}

/// The node id of a site's folder, e.g. `Site/site-1/Deliveries`.
pub fn site_path(site: &str, rest: &[&str]) -> String {
    let mut p = format!("Site/{site}");
    for r in rest {
        p.push('/');
        p.push_str(r);
    }
    p
}

/// Builds the plan of a site. Errors name the asset and field at fault.
pub fn plan(site: &Site) -> Result<Plan, PlanError> {
    check_segment("site id", &site.id)?;
    let mut b = Builder::default();
    b.folder("Site".into(), "Site", "Site", None);
    let root = site_path(&site.id, &[]);
    b.folder(root.clone(), &site.id, &site.id, Some("Site".into()));
    for a in &site.assets {
        b.asset(&site.id, &root, a)?;
    }
    b.agent(site, &root)?;
    b.folder(
        site_path(&site.id, &["Deliveries"]),
        "Deliveries",
        "Deliveries",
        Some(root),
    );
    Ok(b.p)
}

/// A plan as it is built: each folder once, each asset variable once.
#[derive(Default)]
struct Builder {
    p: Plan,
    folders: HashSet<String>,
    ids: HashSet<String>,
}

impl Builder {
    fn folder(&mut self, id: String, name: &str, display: &str, parent: Option<String>) {
        if self.folders.insert(id.clone()) {
            self.p.folders.push(Folder {
                id,
                name: name.to_string(),
                display: display.to_string(),
                parent,
            });
        }
    }

    /// An asset's variable; two fields making one variable are refused.
    fn var(&mut self, asset: &str, v: Var) -> Result<(), PlanError> {
        if !self.ids.insert(v.id.clone()) {
            return Err(PlanError(format!(
                "asset {asset}: two fields make the OPC UA variable {}",
                v.id
            )));
        }
        self.p.vars.push(v);
        Ok(())
    }

    /// An asset's folder, its fixed variables (a tank's product and
    /// capacity) and one variable per point.
    fn asset(&mut self, site_id: &str, root: &str, a: &Asset) -> Result<(), PlanError> {
        check_segment("asset id", &a.id)?;
        let kind_dir = site_path(site_id, &[a.kind.folder()]);
        let kind = a.kind.folder();
        self.folder(kind_dir.clone(), kind, kind, Some(root.to_string()));
        let asset_dir = format!("{kind_dir}/{}", a.id);
        let shown = if a.name.is_empty() { &a.id } else { &a.name };
        self.folder(asset_dir.clone(), &a.id, shown, Some(kind_dir.clone()));
        if a.kind == Kind::Tank {
            self.var(
                &a.id,
                Var {
                    id: format!("{asset_dir}/Product"),
                    name: "Product".into(),
                    parent: asset_dir.clone(),
                    ty: Type::String,
                    unit: None,
                    range: None,
                    writable: false,
                    source: Source::Fixed(Fixed::Text(a.product.clone())),
                },
            )?;
            if let Some(c) = a.capacity_l {
                self.var(
                    &a.id,
                    Var {
                        id: format!("{asset_dir}/Capacity"),
                        name: "Capacity".into(),
                        parent: asset_dir.clone(),
                        ty: Type::Double,
                        unit: unit("L"),
                        range: None,
                        writable: false,
                        source: Source::Fixed(Fixed::Number(c)),
                    },
                )?;
            }
        }
        for pt in &a.points {
            for part in pt.field.split('.') {
                check_segment(&format!("asset {} field", a.id), part)?;
            }
            let (dirs, name) = field_path(&pt.field);
            let mut parent = asset_dir.clone();
            for d in &dirs {
                let id = format!("{parent}/{d}");
                self.folder(id.clone(), d, d, Some(parent.clone()));
                parent = id;
            }
            let boolean = pt.unit == "bool";
            let range = match pt.write_range {
                Some((Some(lo), Some(hi))) => Some((lo, hi)),
                _ if a.kind == Kind::Tank
                    && matches!(pt.field.as_str(), "volume" | "tc_volume" | "ullage") =>
                {
                    a.capacity_l.map(|c| (0.0, c))
                }
                _ => None,
            };
            self.var(
                &a.id,
                Var {
                    id: format!("{parent}/{name}"),
                    name,
                    parent,
                    ty: if boolean { Type::Boolean } else { Type::Double },
                    unit: unit(&pt.unit),
                    range: if boolean { None } else { range },
                    writable: pt.write_range.is_some() && !boolean,
                    source: Source::Reading {
                        asset: a.id.clone(),
                        field: pt.field.clone(),
                    },
                },
            )?;
        }
        Ok(())
    }

    /// The agent's own state and its devices'.
    fn agent(&mut self, site: &Site, root: &str) -> Result<(), PlanError> {
        let agent = site_path(&site.id, &["Agent"]);
        self.folder(agent.clone(), "Agent", "Agent", Some(root.to_string()));
        for (name, ty, v) in [
            (
                "HeadendConnected",
                Type::Boolean,
                AgentVar::HeadendConnected,
            ),
            ("LogEntries", Type::UInt64, AgentVar::LogEntries),
            ("LastAck", Type::DateTime, AgentVar::LastAck),
        ] {
            self.p.vars.push(agent_var(&agent, name, ty, v));
        }
        let devices = format!("{agent}/Devices");
        self.folder(devices.clone(), "Devices", "Devices", Some(agent.clone()));
        for d in &site.devices {
            check_segment("device name", d)?;
            let dir = format!("{devices}/{d}");
            self.folder(dir.clone(), d, d, Some(devices.clone()));
            self.p.vars.push(agent_var(
                &dir,
                "Status",
                Type::String,
                AgentVar::DeviceStatus(d.clone()),
            ));
            self.p.vars.push(agent_var(
                &dir,
                "Connected",
                Type::Boolean,
                AgentVar::DeviceConnected(d.clone()),
            ));
            self.p.vars.push(agent_var(
                &dir,
                "LastError",
                Type::String,
                AgentVar::DeviceLastError(d.clone()),
            ));
        }
        Ok(())
    }
}

fn agent_var(parent: &str, name: &str, ty: Type, v: AgentVar) -> Var {
    Var {
        id: format!("{parent}/{name}"),
        name: name.into(),
        parent: parent.into(),
        ty,
        unit: None,
        range: None,
        writable: false,
        source: Source::Agent(v),
    }
}

/// The variables of one expected delivery (`Deliveries/<load>/...`).
pub fn delivery_vars(site: &str, load: &str) -> (Folder, Vec<Var>) {
    let dir = site_path(site, &["Deliveries", load]);
    let parent = site_path(site, &["Deliveries"]);
    let v = |name: &str, ty: Type, unit: Option<Unit>| Var {
        id: format!("{dir}/{name}"),
        name: name.into(),
        parent: dir.clone(),
        ty,
        unit,
        range: None,
        writable: false,
        source: Source::Delivery,
    };
    (
        Folder {
            id: dir.clone(),
            name: load.into(),
            display: load.into(),
            parent: Some(parent),
        },
        vec![
            v("Eta", Type::DateTime, None),
            v("EtaSource", Type::String, None),
            v("PlannedVolume", Type::Double, unit("L")),
            v("Status", Type::String, None),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> Site {
        Site {
            id: "site-1".into(),
            devices: vec!["atg".into()],
            assets: vec![
                Asset {
                    id: "tank-1".into(),
                    kind: Kind::Tank,
                    name: "Diesel 1".into(),
                    product: "diesel".into(),
                    capacity_l: Some(20000.0),
                    points: vec![
                        Point {
                            field: "volume".into(),
                            unit: "L".into(),
                            write_range: None,
                        },
                        Point {
                            field: "water_height".into(),
                            unit: "mm".into(),
                            write_range: None,
                        },
                        Point {
                            field: "alarm.high_level".into(),
                            unit: "bool".into(),
                            write_range: None,
                        },
                    ],
                },
                Asset {
                    id: "ctl".into(),
                    kind: Kind::Controller,
                    name: String::new(),
                    product: String::new(),
                    capacity_l: None,
                    points: vec![Point {
                        field: "power_limit".into(),
                        unit: "kW".into(),
                        write_range: Some((Some(0.0), Some(80.0))),
                    }],
                },
            ],
        }
    }

    #[test]
    fn fields_become_names_by_their_parts() {
        for (field, dirs, name) in [
            ("volume", vec![], "Volume"),
            ("tc_volume", vec![], "TcVolume"),
            ("water_height", vec![], "WaterHeight"),
            ("alarm.high_level", vec!["Alarms"], "HighLevel"),
            ("delivery.in_progress", vec!["Delivery"], "InProgress"),
            ("status.leak-test", vec!["Status"], "LeakTest"),
        ] {
            assert_eq!(
                field_path(field),
                (dirs.into_iter().map(String::from).collect(), name.into()),
                "{field}"
            );
        }
    }

    #[test]
    fn the_plan_mirrors_the_model_with_units_ranges_and_only_limited_points_writable() {
        let p = plan(&site()).unwrap();
        let var = |id: &str| {
            p.vars
                .iter()
                .find(|v| v.id == id)
                .unwrap_or_else(|| panic!("{id}"))
        };
        let vol = var("Site/site-1/Tanks/tank-1/Volume");
        assert_eq!(
            (vol.ty, vol.range, vol.writable),
            (Type::Double, Some((0.0, 20000.0)), false)
        );
        assert_eq!(vol.unit.unwrap().code, "LTR");
        assert_eq!(var("Site/site-1/Tanks/tank-1/WaterHeight").range, None);
        let alarm = var("Site/site-1/Tanks/tank-1/Alarms/HighLevel");
        assert_eq!((alarm.ty, alarm.unit), (Type::Boolean, None));
        assert_eq!(
            var("Site/site-1/Tanks/tank-1/Product").source,
            Source::Fixed(Fixed::Text("diesel".into()))
        );
        let sp = var("Site/site-1/Controllers/ctl/PowerLimit");
        assert_eq!((sp.writable, sp.range), (true, Some((0.0, 80.0))));
        assert_eq!(
            var("Site/site-1/Agent/Devices/atg/Status").source,
            Source::Agent(AgentVar::DeviceStatus("atg".into()))
        );
        // every parent exists, and the tank's display name is its name
        for v in &p.vars {
            assert!(p.folders.iter().any(|f| f.id == v.parent), "{}", v.parent);
        }
        let tank = p
            .folders
            .iter()
            .find(|f| f.id == "Site/site-1/Tanks/tank-1")
            .unwrap();
        assert_eq!(
            (tank.name.as_str(), tank.display.as_str()),
            ("tank-1", "Diesel 1")
        );
        assert!(p.folders.iter().any(|f| f.id == "Site/site-1/Deliveries"));
    }

    #[test]
    fn two_fields_with_one_name_or_a_slash_in_a_name_are_refused_naming_them() {
        let mut s = site();
        s.assets[0].points.push(Point {
            field: "tc-volume".into(),
            unit: "L".into(),
            write_range: None,
        });
        s.assets[0].points.push(Point {
            field: "tc_volume".into(),
            unit: "L".into(),
            write_range: None,
        });
        let e = plan(&s).unwrap_err();
        assert!(e.0.contains("tank-1") && e.0.contains("TcVolume"), "{e}");
        let mut s = site();
        s.assets[1].id = "a/b".into();
        assert!(plan(&s).unwrap_err().0.contains("\"a/b\""));
    }

    #[test]
    fn unit_ids_follow_the_unece_encoding() {
        // OPC UA Part 8: "LTR" = 0x4C5452
        assert_eq!(unit("L").unwrap().unit_id(), 0x4C5452);
        assert_eq!(unit("degC").unwrap().unit_id(), 4408652);
        assert_eq!(unit("bool"), None);
    }
}
