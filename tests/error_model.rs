//! The public error model as a user of the crate sees it.

use totemcast::api::{Guarantee, MAX_ATOMIC_MSGSIZE};
use totemcast::error::ERROR_TABLE;
use totemcast::{CsError, Error};

fn fails_with_name_too_long(name: &[u8]) -> totemcast::Result<()> {
    if name.len() > totemcast::api::CPG_MAX_NAME_LENGTH {
        return Err(Error::NameTooLong(
            format!("group name is {} bytes", name.len()).into(),
        ));
    }
    Ok(())
}

#[test]
fn question_mark_and_boxing_work() {
    let error = fails_with_name_too_long(&[b'x'; 129]).unwrap_err();
    assert_eq!(error.code(), CsError::NameTooLong);
    assert_eq!(u32::from(&error), 13);
    let boxed: Box<dyn std::error::Error + Send + Sync> = error.into();
    assert_eq!(
        boxed.to_string(),
        "group name is 129 bytes (CS_ERR_NAME_TOO_LONG)"
    );
    assert!(fails_with_name_too_long(&[b'x'; 128]).is_ok());
}

#[test]
fn every_table_code_converts_both_ways() {
    for row in ERROR_TABLE {
        let error = Error::try_from(row.code).unwrap();
        assert_eq!(u32::from(error.code()), row.code);
        assert_eq!(error.code().to_string(), row.c_name);
    }
    assert!(Error::try_from(29).is_err());
}

#[test]
fn guarantees_parse_from_wire_values() {
    assert_eq!(Guarantee::try_from(3).unwrap(), Guarantee::Safe);
    assert_eq!(
        Guarantee::try_from(9).unwrap_err().code(),
        CsError::InvalidParam
    );
    const { assert!(MAX_ATOMIC_MSGSIZE >= 16 << 20) };
}
