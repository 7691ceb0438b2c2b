//! TEST ONLY: the few internals of a real node that the reliability tests
//! (hostile and lying parties, secrets on disk) and the fuzz targets drive
//! directly. Everything else of `state`, `protocol` and `keys` is
//! crate-private; nothing here is an API for operators or gateways.

pub use crate::keys::{presignature, IDENTITY_KEY, TLS_KEY};
pub use crate::protocol::presign::{used_records, UsedRecord};
pub use crate::protocol::records::{load_key_record, load_share};
pub use crate::protocol::sign::sign_session;
pub use crate::state::Node;
