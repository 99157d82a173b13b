//! The enums and limits of the CPG and EVS APIs, with Corosync's numbers.
//!
//! Each enum is declared once with [`api_enum!`]; the Python module builds its `IntEnum`s from
//! [`PYTHON_ENUMS`], so Rust and Python cannot drift apart.

use crate::error::Error;

/// One enum as exported to Python: its name and its `(member, value)` pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnumInfo {
    /// The Python class name, e.g. `Guarantee`.
    pub name: &'static str,
    /// Members in declaration order, named as in Corosync without the prefix.
    pub members: &'static [(&'static str, u32)],
}

macro_rules! api_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal {
        $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $py:literal, )*
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u32)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value, )*
        }

        impl $name {
            /// The members and their values, for the Python `IntEnum`.
            pub const INFO: EnumInfo = EnumInfo {
                name: stringify!($name),
                members: &[$(($py, $value)),*],
            };
        }

        impl From<$name> for u32 {
            fn from(value: $name) -> u32 {
                value as u32
            }
        }

        impl TryFrom<u32> for $name {
            type Error = Error;

            fn try_from(value: u32) -> Result<Self, Error> {
                match value {
                    $($value => Ok($name::$variant),)*
                    _ => Err(Error::InvalidParam(
                        format!(concat!("{} is not a valid ", $what), value).into(),
                    )),
                }
            }
        }
    };
}

api_enum! {
    /// Delivery guarantee of a message (`cpg_guarantee_t`, `evs_guarantee_t`).
    Guarantee, "guarantee (UNORDERED=0, FIFO=1, AGREED=2, SAFE=3)" {
        /// Reliable, delivered on receipt, no order promised.
        Unordered = 0 => "UNORDERED",
        /// Delivered in each sender's order.
        Fifo = 1 => "FIFO",
        /// One total order shared by every member.
        Agreed = 2 => "AGREED",
        /// Agreed order, and delivered only once every member of the configuration has it.
        Safe = 3 => "SAFE",
    }
}

api_enum! {
    /// How `dispatch` runs callbacks (`cs_dispatch_flags_t`).
    DispatchFlags, "dispatch flag (ONE=1, ALL=2, BLOCKING=3, ONE_NONBLOCKING=4)" {
        /// Block until one event has been handled.
        One = 1 => "ONE",
        /// Handle everything queued now, never block.
        All = 2 => "ALL",
        /// Handle events until the handle is finalized or fails.
        Blocking = 3 => "BLOCKING",
        /// Handle at most one event; `CS_ERR_TRY_AGAIN` if there is none.
        OneNonblocking = 4 => "ONE_NONBLOCKING",
    }
}

api_enum! {
    /// Why a process appears in a confchg list (`cpg_reason_t`).
    Reason, "reason (0 to 5)" {
        /// Used for entries of a member list.
        Undefined = 0 => "UNDEFINED",
        /// The process joined the group.
        Join = 1 => "JOIN",
        /// The process left the group.
        Leave = 2 => "LEAVE",
        /// The process's node left the configuration.
        NodeDown = 3 => "NODEDOWN",
        /// The process's node joined the configuration.
        NodeUp = 4 => "NODEUP",
        /// The process ended or its connection closed without a leave.
        ProcDown = 5 => "PROCDOWN",
    }
}

api_enum! {
    /// Whether the node currently refuses sends from a handle (`cpg_flow_control_state_t`).
    FlowControlState, "flow control state (DISABLED=0, ENABLED=1)" {
        /// Sends are accepted.
        Disabled = 0 => "DISABLED",
        /// Sends get `CS_ERR_TRY_AGAIN` until the backlog drains.
        Enabled = 1 => "ENABLED",
    }
}

api_enum! {
    /// What an iteration walks over (`cpg_iteration_type_t`).
    IterationType, "iteration type (NAME_ONLY=1, ONE_GROUP=2, ALL=3)" {
        /// Every group name once.
        NameOnly = 1 => "NAME_ONLY",
        /// The members of one group.
        OneGroup = 2 => "ONE_GROUP",
        /// Every member of every group.
        All = 3 => "ALL",
    }
}

api_enum! {
    /// Which kind of totem configuration an EVS confchg is (Corosync's
    /// `totem_configuration_type`).
    ConfigurationType, "configuration type (REGULAR=0, TRANSITIONAL=1)" {
        /// A new ring's configuration: its members and who joined.
        Regular = 0 => "REGULAR",
        /// The members of the old ring that move on together to the new one, and who left.
        Transitional = 1 => "TRANSITIONAL",
    }
}

impl From<crate::totem::ConfigurationKind> for ConfigurationType {
    fn from(kind: crate::totem::ConfigurationKind) -> ConfigurationType {
        match kind {
            crate::totem::ConfigurationKind::Regular => ConfigurationType::Regular,
            crate::totem::ConfigurationKind::Transitional => ConfigurationType::Transitional,
        }
    }
}

/// Every enum that the Python module exports as an `IntEnum`.
pub const PYTHON_ENUMS: &[EnumInfo] = &[
    Guarantee::INFO,
    DispatchFlags::INFO,
    Reason::INFO,
    FlowControlState::INFO,
    IterationType::INFO,
    ConfigurationType::INFO,
];

/// Longest CPG group name in bytes (`CPG_MAX_NAME_LENGTH`).
pub const CPG_MAX_NAME_LENGTH: usize = 128;

/// Length of an EVS group key in bytes; shorter keys are zero-padded.
pub const EVS_GROUP_KEY_LENGTH: usize = 32;

/// Most groups one `evs_join`/`evs_leave`/`evs_mcast_groups` call may name
/// (more gives `CS_ERR_TOO_MANY_GROUPS`).
pub const EVS_GROUPS_PER_CALL_MAX: usize = 50;

/// Largest message, in bytes, that is delivered whole or not at all: totemcast fragments
/// larger payloads on the wire but never delivers a part. (Corosync's atomic limit is
/// 1,047,552 bytes and it delivers larger messages non-atomically.)
pub const MAX_ATOMIC_MSGSIZE: usize = 64 * 1024 * 1024;

/// Bytes a service (CPG, EVS) may add in front of an application message in the totem
/// payload; the core's limit is the application's plus this.
pub const SERVICE_HEADER_MAX: usize = 256;

/// Every integer limit that the Python module exports, by name.
pub const PYTHON_LIMITS: &[(&str, usize)] = &[
    ("CPG_MAX_NAME_LENGTH", CPG_MAX_NAME_LENGTH),
    ("EVS_GROUP_KEY_LENGTH", EVS_GROUP_KEY_LENGTH),
    ("EVS_GROUPS_PER_CALL_MAX", EVS_GROUPS_PER_CALL_MAX),
    ("MAX_ATOMIC_MSGSIZE", MAX_ATOMIC_MSGSIZE),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CsError;

    #[test]
    fn values_match_corosync() {
        assert_eq!(u32::from(Guarantee::Unordered), 0);
        assert_eq!(u32::from(Guarantee::Safe), 3);
        assert_eq!(u32::from(DispatchFlags::OneNonblocking), 4);
        assert_eq!(u32::from(Reason::ProcDown), 5);
        assert_eq!(u32::from(FlowControlState::Enabled), 1);
        assert_eq!(u32::from(IterationType::All), 3);
        assert_eq!(u32::from(ConfigurationType::Regular), 0);
        assert_eq!(u32::from(ConfigurationType::Transitional), 1);
    }

    #[test]
    fn every_member_round_trips() {
        for info in PYTHON_ENUMS {
            assert!(!info.members.is_empty());
            for &(_, value) in info.members {
                let back = match info.name {
                    "Guarantee" => Guarantee::try_from(value).map(u32::from),
                    "DispatchFlags" => DispatchFlags::try_from(value).map(u32::from),
                    "Reason" => Reason::try_from(value).map(u32::from),
                    "FlowControlState" => FlowControlState::try_from(value).map(u32::from),
                    "IterationType" => IterationType::try_from(value).map(u32::from),
                    "ConfigurationType" => ConfigurationType::try_from(value).map(u32::from),
                    other => panic!("enum {other} missing from this test"),
                };
                assert_eq!(back, Ok(value));
            }
        }
    }

    #[test]
    fn out_of_range_values_are_invalid_param() {
        let error = Guarantee::try_from(4).unwrap_err();
        assert_eq!(error.code(), CsError::InvalidParam);
        assert!(error.to_string().contains("4 is not a valid guarantee"));
        assert!(DispatchFlags::try_from(0).is_err());
        assert!(Reason::try_from(6).is_err());
        assert!(IterationType::try_from(0).is_err());
    }
}
