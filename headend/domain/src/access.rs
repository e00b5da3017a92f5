//! Who may do what: roles, the permissions each holds, and the optional
//! site scope of a user or an API key. Pure: the REST layer asks
//! [`Role::may`] and [`Scope::covers`] and turns a "no" into 403 or 404.
//! The table a person reads is `docs/operator-access.md`; the test below
//! and the role-matrix e2e test hold the code to it.

use std::collections::BTreeSet;

use super::{Unknown, text_enum};

text_enum!(
    /// A person's or an integration's role.
    Role, "role" {
        /// Everything, including users, API keys and sessions of others.
        Admin => "admin",
        /// Operations and the audit trail; no users or keys.
        Manager => "manager",
        /// Commands and loads of its sites; reads.
        Dispatcher => "dispatcher",
        /// Reads only.
        Viewer => "viewer",
    }
);

text_enum!(
    /// What a route needs.
    Permission, "permission" {
        /// Sites, assets, readings, rollups, gaps, deliveries, devices,
        /// commands and loads.
        Read => "read",
        /// Submit and cancel commands (setpoints, ETA pushes).
        Command => "command",
        /// Day-to-day operations: create and change loads, push and import
        /// inventory observations, work escalations.
        Loads => "loads",
        /// Sites' and tanks' settings (capacity, product, levels, time zone).
        Configure => "configure",
        /// Read the audit trail.
        Audit => "audit",
        /// Prometheus metrics (all sites at once: unscoped only).
        Metrics => "metrics",
        /// Users, API keys, everyone's sessions.
        Admin => "admin",
    }
);

impl Role {
    /// Does this role hold `p`?
    pub fn may(self, p: Permission) -> bool {
        use Permission as P;
        match self {
            Role::Admin => true,
            Role::Manager => !matches!(p, P::Admin),
            Role::Dispatcher => matches!(p, P::Read | P::Command | P::Loads | P::Metrics),
            Role::Viewer => matches!(p, P::Read | P::Metrics),
        }
    }
}

impl Role {
    /// Roles are nested: each holds every permission of the ones below
    /// it (the table test proves it), so power is a rank.
    pub fn rank(self) -> u8 {
        match self {
            Role::Viewer => 0,
            Role::Dispatcher => 1,
            Role::Manager => 2,
            Role::Admin => 3,
        }
    }

    /// The lesser of two roles.
    pub fn min(self, other: Role) -> Role {
        if self.rank() <= other.rank() {
            self
        } else {
            other
        }
    }
}

/// What a credential may do: a role over a scope. A grant is wider than
/// another when it has a higher role or sees a site the other does not.
///
/// **Nobody grants or manages beyond themselves**: a user, a key or a
/// session may create, change, reset, disable, list or revoke only
/// users and keys whose grant it covers, and a change may only produce a
/// grant it covers ([`Grant::may_administer`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub role: Role,
    pub scope: Scope,
}

impl Grant {
    pub fn new(role: Role, scope: Scope) -> Grant {
        Grant { role, scope }
    }

    /// The headend's own command line (root on its host): everything.
    pub fn root() -> Grant {
        Grant::new(Role::Admin, Scope::All)
    }

    /// Is `other` no wider than this, in role and in scope?
    pub fn covers(&self, other: &Grant) -> bool {
        self.role.rank() >= other.role.rank() && self.scope.contains(&other.scope)
    }

    /// May this grant's holder administer `other`: manage a user or key
    /// that holds it (see, change, reset, disable, revoke), or give it (a
    /// new user or key with it, a change to it)? One rule for both.
    pub fn may_administer(&self, other: &Grant) -> bool {
        self.role.may(Permission::Admin) && self.covers(other)
    }

    /// What a credential issued under `owner` may do: the lesser role
    /// and the common sites (an API key never outgrows the user who
    /// made it, now: a demoted owner demotes the key).
    pub fn meet(&self, owner: &Grant) -> Grant {
        Grant::new(
            self.role.min(owner.role),
            self.scope.intersect(&owner.scope),
        )
    }
}

/// Most sites one scope may list.
pub const MAX_SCOPE_SITES: usize = 1000;

/// The sites a user or key may see and act on: all, or a list. A site
/// outside it does not exist for them (404, never 403: a scoped
/// dispatcher cannot probe which site ids exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Sites(BTreeSet<String>),
}

impl Scope {
    pub fn covers(&self, site: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Sites(s) => s.contains(site),
        }
    }

    pub fn is_all(&self) -> bool {
        matches!(self, Scope::All)
    }

    /// From a list of site ids (`None` or `["*"]`: all). An empty list,
    /// a blank or over-long id is refused.
    pub fn from_list(sites: Option<&[String]>) -> Result<Scope, String> {
        let Some(sites) = sites else {
            return Ok(Scope::All);
        };
        if sites.len() == 1 && sites[0] == "*" {
            return Ok(Scope::All);
        }
        if sites.is_empty() {
            return Err("an empty site list would see nothing; leave it out for all sites".into());
        }
        if sites.len() > MAX_SCOPE_SITES {
            return Err(format!("at most {MAX_SCOPE_SITES} sites"));
        }
        let mut out = BTreeSet::new();
        for s in sites {
            if s.is_empty()
                || s.len() > 128
                || s == "*"
                || s.chars().any(|c| c.is_control() || c == ',')
            {
                return Err(format!("{s:?} is not a site id"));
            }
            out.insert(s.clone());
        }
        Ok(Scope::Sites(out))
    }

    /// Does this scope see every site `other` sees?
    pub fn contains(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::All, _) => true,
            (Scope::Sites(_), Scope::All) => false,
            (Scope::Sites(a), Scope::Sites(b)) => b.is_subset(a),
        }
    }

    /// The sites both see (possibly none: a scope that sees nothing).
    pub fn intersect(&self, other: &Scope) -> Scope {
        match (self, other) {
            (Scope::All, o) | (o, Scope::All) => o.clone(),
            (Scope::Sites(a), Scope::Sites(b)) => {
                Scope::Sites(a.intersection(b).cloned().collect())
            }
        }
    }

    /// The sites, or `None` for all.
    pub fn sites(&self) -> Option<Vec<String>> {
        match self {
            Scope::All => None,
            Scope::Sites(s) => Some(s.iter().cloned().collect()),
        }
    }
}

/// SQL and text form: `*` or the site ids joined by `,`.
impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::All => f.write_str("*"),
            Scope::Sites(s) => f.write_str(&s.iter().cloned().collect::<Vec<_>>().join(",")),
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = Unknown;
    fn from_str(s: &str) -> Result<Scope, Unknown> {
        let list: Vec<String> = if s == "*" {
            vec!["*".into()]
        } else {
            s.split(',').map(str::to_string).collect()
        };
        Scope::from_list(Some(&list)).map_err(|_| Unknown {
            what: "scope",
            value: s.into(),
        })
    }
}

impl serde::Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.sites() {
            None => s.serialize_str("*"),
            Some(v) => v.serialize(s),
        }
    }
}

super::sql_text!(Scope);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_permissions_round_trip_their_text() {
        crate::round_trips(Role::ALL);
        crate::round_trips(Permission::ALL);
    }

    /// The table in docs/operator-access.md, cell by cell.
    #[test]
    fn each_role_holds_exactly_the_permissions_the_documented_table_gives_it() {
        use Permission as P;
        let table: &[(Role, &[Permission])] = &[
            (
                Role::Admin,
                &[
                    P::Read,
                    P::Command,
                    P::Loads,
                    P::Configure,
                    P::Audit,
                    P::Metrics,
                    P::Admin,
                ],
            ),
            (
                Role::Manager,
                &[
                    P::Read,
                    P::Command,
                    P::Loads,
                    P::Configure,
                    P::Audit,
                    P::Metrics,
                ],
            ),
            (
                Role::Dispatcher,
                &[P::Read, P::Command, P::Loads, P::Metrics],
            ),
            (Role::Viewer, &[P::Read, P::Metrics]),
        ];
        for (role, held) in table {
            for p in Permission::ALL {
                assert_eq!(role.may(*p), held.contains(p), "{role} {p}");
            }
        }
    }

    /// Roles are nested, so a rank is enough to compare them.
    #[test]
    fn a_higher_rank_holds_every_permission_of_a_lower_one() {
        for a in Role::ALL {
            for b in Role::ALL {
                if a.rank() >= b.rank() {
                    for p in Permission::ALL {
                        assert!(!b.may(*p) || a.may(*p), "{a} >= {b} but lacks {p}");
                    }
                }
            }
        }
    }

    #[test]
    fn nobody_gives_or_manages_a_grant_wider_than_their_own_in_role_or_scope() {
        let sites = |l: &[&str]| {
            Scope::from_list(Some(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>())).unwrap()
        };
        let g = |r: Role, s: Scope| Grant::new(r, s);
        let north = sites(&["n-1"]);
        let both = sites(&["n-1", "s-1"]);
        let full_admin = Grant::root();
        let north_admin = g(Role::Admin, north.clone());
        let north_manager = g(Role::Manager, north.clone());
        // (who, the grant asked for, allowed)
        let table = [
            (&full_admin, g(Role::Admin, Scope::All), true),
            (&full_admin, g(Role::Viewer, both.clone()), true),
            (&north_admin, g(Role::Admin, north.clone()), true),
            (&north_admin, g(Role::Viewer, north.clone()), true),
            // wider scope: all sites, or one more site
            (&north_admin, g(Role::Admin, Scope::All), false),
            (&north_admin, g(Role::Viewer, Scope::All), false),
            (&north_admin, g(Role::Viewer, both.clone()), false),
            (&north_admin, g(Role::Viewer, sites(&["s-1"])), false),
            // a manager holds no admin permission at all
            (&north_manager, g(Role::Viewer, north.clone()), false),
        ];
        for (who, asked, ok) in table {
            assert_eq!(
                who.may_administer(&asked),
                ok,
                "{who:?} gives or manages {asked:?}"
            );
        }
    }

    #[test]
    fn a_key_is_the_lesser_of_its_own_grant_and_its_owners() {
        let sites = |l: &[&str]| {
            Scope::from_list(Some(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>())).unwrap()
        };
        let key = Grant::new(Role::Admin, Scope::All);
        let demoted = Grant::new(Role::Viewer, sites(&["n-1"]));
        assert_eq!(key.meet(&demoted), demoted);
        let k2 = Grant::new(Role::Dispatcher, sites(&["n-1", "s-1"]));
        let o2 = Grant::new(Role::Admin, sites(&["s-1", "w-1"]));
        assert_eq!(k2.meet(&o2), Grant::new(Role::Dispatcher, sites(&["s-1"])));
        let nothing = Grant::new(Role::Viewer, sites(&["n-1"]))
            .meet(&Grant::new(Role::Admin, sites(&["s-1"])));
        assert!(!nothing.scope.covers("n-1") && !nothing.scope.covers("s-1"));
    }

    #[test]
    fn a_scope_covers_only_its_sites_and_round_trips_its_text() {
        let north = Scope::from_list(Some(&["n-1".into(), "n-2".into()])).unwrap();
        assert!(north.covers("n-1") && !north.covers("s-1"));
        assert!(Scope::All.covers("anything"));
        for s in [Scope::All, north.clone()] {
            assert_eq!(s.to_string().parse::<Scope>().unwrap(), s);
        }
        assert_eq!(Scope::from_list(None).unwrap(), Scope::All);
        assert_eq!(Scope::from_list(Some(&["*".into()])).unwrap(), Scope::All);
        for bad in [
            vec![],
            vec!["".to_string()],
            vec!["a,b".to_string()],
            vec!["a".into(), "*".into()],
        ] {
            assert!(Scope::from_list(Some(&bad)).is_err(), "{bad:?}");
        }
        assert!("".parse::<Scope>().is_err());
    }
}
