//! The error model: Corosync's `cs_error_t` codes.
//!
//! One table, [`cs_error_table!`], lists every code with Corosync's number, its C name, the
//! Python exception class that stands for it and the Python builtin that class also derives
//! from. Everything else is generated from that table: the [`CsError`] code enum, the
//! [`Error`] enum (one variant per error code, each with a detail message), the integer
//! conversions, and [`ERROR_TABLE`], from which the Python module builds `totemcast.CsError`
//! and the `totemcast.Error` exception hierarchy. Adding a code in one place adds it everywhere.

use std::borrow::Cow;
use std::fmt;

/// Facts about one `cs_error_t` code, as exported to the Python layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorInfo {
    /// Corosync's number for the code.
    pub code: u32,
    /// The C name, e.g. `CS_ERR_TRY_AGAIN`.
    pub c_name: &'static str,
    /// The Python exception class, e.g. `TryAgainError`.
    pub python_class: &'static str,
    /// The Python builtin exception the class also derives from, or `""` for none.
    pub python_builtin: &'static str,
    /// A short description used when an error carries no detail of its own.
    pub description: &'static str,
}

/// A number that is not a `cs_error_t` error code (or is `CS_OK`, which is not an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownErrorCode(pub u32);

impl fmt::Display for UnknownErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == CsError::Ok as u32 {
            write!(f, "code 1 is CS_OK, which is not an error")
        } else {
            write!(
                f,
                "{} is not a cs_error_t code (the codes are 1 to 28, 30 and 100)",
                self.0
            )
        }
    }
}

impl std::error::Error for UnknownErrorCode {}

macro_rules! cs_error_table {
    ($( $variant:ident = $code:literal, $c_name:literal, $py_class:literal, $py_builtin:literal,
        $description:literal; )*) => {
        /// Every `cs_error_t` value with Corosync's number, `CS_OK` included.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u32)]
        pub enum CsError {
            /// `CS_OK`: success.
            Ok = 1,
            $(
                #[doc = concat!("`", $c_name, "`: ", $description, ".")]
                $variant = $code,
            )*
        }

        impl CsError {
            /// Every code, in numeric order, `CS_OK` first.
            pub const ALL: &'static [CsError] = &[CsError::Ok, $(CsError::$variant),*];

            /// The C name, e.g. `CS_ERR_TRY_AGAIN`.
            #[must_use]
            pub const fn c_name(self) -> &'static str {
                match self {
                    CsError::Ok => "CS_OK",
                    $(CsError::$variant => $c_name,)*
                }
            }

            /// The code as Corosync's integer.
            #[must_use]
            pub const fn code(self) -> u32 {
                self as u32
            }
        }

        impl TryFrom<u32> for CsError {
            type Error = UnknownErrorCode;

            fn try_from(code: u32) -> Result<Self, UnknownErrorCode> {
                match code {
                    1 => Ok(CsError::Ok),
                    $($code => Ok(CsError::$variant),)*
                    _ => Err(UnknownErrorCode(code)),
                }
            }
        }

        /// A failed call: one variant per `cs_error_t` error code, each with a detail message
        /// that says what was wrong (empty when there is nothing to add to the code).
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum Error {
            $(
                #[doc = concat!("`", $c_name, "`: ", $description, ".")]
                $variant(Cow<'static, str>),
            )*
        }

        impl Error {
            /// The `cs_error_t` code of this error.
            #[must_use]
            pub const fn code(&self) -> CsError {
                match self {
                    $(Error::$variant(_) => CsError::$variant,)*
                }
            }

            /// The table row of this error's code.
            #[must_use]
            pub const fn info(&self) -> &'static ErrorInfo {
                match self {
                    $(Error::$variant(_) => &ErrorInfo {
                        code: $code,
                        c_name: $c_name,
                        python_class: $py_class,
                        python_builtin: $py_builtin,
                        description: $description,
                    },)*
                }
            }

            /// The detail message given when the error was made (may be empty).
            #[must_use]
            pub fn detail(&self) -> &str {
                match self {
                    $(Error::$variant(detail) => detail,)*
                }
            }

            /// The error for a Corosync integer code, with `detail` as its message.
            ///
            /// Fails for `CS_OK` (1) and for numbers that are not codes (e.g. 29).
            pub fn from_code(
                code: u32,
                detail: impl Into<Cow<'static, str>>,
            ) -> Result<Error, UnknownErrorCode> {
                match code {
                    $($code => Ok(Error::$variant(detail.into())),)*
                    _ => Err(UnknownErrorCode(code)),
                }
            }
        }

        /// Every error code (not `CS_OK`) with its names, in numeric order.
        pub const ERROR_TABLE: &[ErrorInfo] = &[
            $(ErrorInfo {
                code: $code,
                c_name: $c_name,
                python_class: $py_class,
                python_builtin: $py_builtin,
                description: $description,
            },)*
        ];
    };
}

cs_error_table! {
    Library = 2, "CS_ERR_LIBRARY", "LibraryError", "ConnectionError",
        "the node is unreachable or the connection to it was lost";
    Version = 3, "CS_ERR_VERSION", "VersionError", "",
        "the client and the node speak different protocol versions";
    Init = 4, "CS_ERR_INIT", "InitError", "",
        "initialization failed";
    Timeout = 5, "CS_ERR_TIMEOUT", "TimeoutError", "TimeoutError",
        "the operation timed out";
    TryAgain = 6, "CS_ERR_TRY_AGAIN", "TryAgainError", "",
        "temporarily unavailable, try again later (nothing was accepted)";
    InvalidParam = 7, "CS_ERR_INVALID_PARAM", "InvalidParamError", "ValueError",
        "invalid parameter";
    NoMemory = 8, "CS_ERR_NO_MEMORY", "NoMemoryError", "MemoryError",
        "out of memory";
    BadHandle = 9, "CS_ERR_BAD_HANDLE", "BadHandleError", "ValueError",
        "the handle is invalid or was finalized";
    Busy = 10, "CS_ERR_BUSY", "BusyError", "",
        "busy with an earlier request";
    Access = 11, "CS_ERR_ACCESS", "AccessError", "PermissionError",
        "access denied";
    NotExist = 12, "CS_ERR_NOT_EXIST", "NotExistError", "LookupError",
        "does not exist (e.g. not joined)";
    NameTooLong = 13, "CS_ERR_NAME_TOO_LONG", "NameTooLongError", "ValueError",
        "name too long";
    Exist = 14, "CS_ERR_EXIST", "ExistError", "",
        "already exists (e.g. already joined)";
    NoSpace = 15, "CS_ERR_NO_SPACE", "NoSpaceError", "",
        "no space left";
    Interrupt = 16, "CS_ERR_INTERRUPT", "InterruptError", "InterruptedError",
        "interrupted";
    NameNotFound = 17, "CS_ERR_NAME_NOT_FOUND", "NameNotFoundError", "LookupError",
        "name not found";
    NoResources = 18, "CS_ERR_NO_RESOURCES", "NoResourcesError", "",
        "out of resources";
    NotSupported = 19, "CS_ERR_NOT_SUPPORTED", "NotSupportedError", "NotImplementedError",
        "not supported";
    BadOperation = 20, "CS_ERR_BAD_OPERATION", "BadOperationError", "",
        "operation not allowed now";
    FailedOperation = 21, "CS_ERR_FAILED_OPERATION", "FailedOperationError", "",
        "operation failed";
    MessageError = 22, "CS_ERR_MESSAGE_ERROR", "MessageError", "",
        "malformed or unauthenticated message";
    QueueFull = 23, "CS_ERR_QUEUE_FULL", "QueueFullError", "",
        "queue full";
    QueueNotAvailable = 24, "CS_ERR_QUEUE_NOT_AVAILABLE", "QueueNotAvailableError", "",
        "queue not available";
    BadFlags = 25, "CS_ERR_BAD_FLAGS", "BadFlagsError", "ValueError",
        "invalid flags";
    TooBig = 26, "CS_ERR_TOO_BIG", "TooBigError", "ValueError",
        "too big";
    NoSections = 27, "CS_ERR_NO_SECTIONS", "NoSectionsError", "",
        "no more sections (end of iteration)";
    ContextNotFound = 28, "CS_ERR_CONTEXT_NOT_FOUND", "ContextNotFoundError", "LookupError",
        "context not found";
    TooManyGroups = 30, "CS_ERR_TOO_MANY_GROUPS", "TooManyGroupsError", "ValueError",
        "too many groups";
    Security = 100, "CS_ERR_SECURITY", "SecurityError", "PermissionError",
        "security check failed";
}

impl fmt::Display for CsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.c_name())
    }
}

impl From<CsError> for u32 {
    fn from(code: CsError) -> u32 {
        code.code()
    }
}

/// The table row for `code`, or `None` for `CS_OK`.
#[must_use]
pub fn info(code: CsError) -> Option<&'static ErrorInfo> {
    ERROR_TABLE.iter().find(|row| row.code == code.code())
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.info();
        let detail = self.detail();
        let message = if detail.is_empty() {
            info.description
        } else {
            detail
        };
        write!(f, "{message} ({})", info.c_name)
    }
}

impl std::error::Error for Error {}

impl From<&Error> for u32 {
    fn from(error: &Error) -> u32 {
        error.code().code()
    }
}

impl From<Error> for u32 {
    fn from(error: Error) -> u32 {
        error.code().code()
    }
}

impl TryFrom<u32> for Error {
    type Error = UnknownErrorCode;

    fn try_from(code: u32) -> Result<Self, UnknownErrorCode> {
        Error::from_code(code, "")
    }
}

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_corosync_numbers() {
        let codes: Vec<u32> = ERROR_TABLE.iter().map(|row| row.code).collect();
        let mut expected: Vec<u32> = (2..=28).collect();
        expected.extend([30, 100]);
        assert_eq!(codes, expected);
        assert_eq!(CsError::ALL.len(), ERROR_TABLE.len() + 1);
        assert_eq!(CsError::TryAgain.code(), 6);
        assert_eq!(CsError::Security.code(), 100);
        assert_eq!(CsError::TooManyGroups.code(), 30);
    }

    #[test]
    fn every_code_round_trips() {
        for row in ERROR_TABLE {
            let error = Error::from_code(row.code, "detail").unwrap();
            assert_eq!(u32::from(&error), row.code);
            assert_eq!(error.code().c_name(), row.c_name);
            assert_eq!(CsError::try_from(row.code).unwrap(), error.code());
            assert_eq!(error.info(), row);
            assert_eq!(Error::try_from(row.code).unwrap().code(), error.code());
        }
    }

    #[test]
    fn names_follow_the_c_names() {
        for row in ERROR_TABLE {
            assert!(row.c_name.starts_with("CS_ERR_"), "{}", row.c_name);
            assert!(row.python_class.ends_with("Error"), "{}", row.python_class);
        }
    }

    #[test]
    fn unknown_codes_are_rejected() {
        for code in [0, 1, 29, 31, 99, 101, u32::MAX] {
            let err = Error::from_code(code, "").unwrap_err();
            assert_eq!(err, UnknownErrorCode(code));
        }
        assert!(CsError::try_from(29).is_err());
        assert_eq!(CsError::try_from(1), Ok(CsError::Ok));
        assert!(
            UnknownErrorCode(29)
                .to_string()
                .contains("29 is not a cs_error_t code")
        );
        assert!(UnknownErrorCode(1).to_string().contains("CS_OK"));
    }

    #[test]
    fn display_names_the_code_and_the_detail() {
        let error = Error::NameTooLong("group name is 129 bytes, the limit is 128".into());
        assert_eq!(
            error.to_string(),
            "group name is 129 bytes, the limit is 128 (CS_ERR_NAME_TOO_LONG)"
        );
        let bare = Error::TryAgain(Cow::Borrowed(""));
        assert!(bare.to_string().starts_with("temporarily unavailable"));
        assert!(bare.to_string().ends_with("(CS_ERR_TRY_AGAIN)"));
        let boxed: Box<dyn std::error::Error> = Box::new(bare);
        assert!(boxed.to_string().contains("CS_ERR_TRY_AGAIN"));
    }
}
