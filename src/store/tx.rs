//! The one implementation of the role traits: a transaction on either backend, with the
//! master key at hand to seal and open secret columns.

use zeroize::Zeroizing;

use super::StoreError;
use super::keys::Keys;
use super::sql::Conn;

pub(crate) struct SqlTx<'a> {
    pub conn: &'a mut dyn Conn,
    pub keys: &'a Keys,
}

impl SqlTx<'_> {
    pub fn seal(&mut self, purpose: &str, plaintext: &[u8]) -> Result<Vec<u8>, StoreError> {
        let key = self.keys.get(self.conn)?;
        Ok(key.seal(purpose, plaintext)?)
    }

    pub fn seal_opt(
        &mut self,
        purpose: &str,
        plaintext: Option<&[u8]>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        plaintext.map(|p| self.seal(purpose, p)).transpose()
    }

    pub fn open(&mut self, purpose: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let key = self.keys.get(self.conn)?;
        Ok(key.open(purpose, sealed)?)
    }

    pub fn open_opt(
        &mut self,
        purpose: &str,
        sealed: Option<Vec<u8>>,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        sealed.map(|s| self.open(purpose, &s)).transpose()
    }

    /// Make sure the master key is unlocked (asks for the passphrase once).
    pub fn unlock(&mut self) -> Result<(), StoreError> {
        self.keys.get(self.conn).map(|_| ())
    }
}
