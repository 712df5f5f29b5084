//! Client authentication (RFC 6749 §2.3): `client_secret_basic`, `client_secret_post`, or a public
//! client's `client_id` alone. A request that names no client at all is the default public client.

use subtle::ConstantTimeEq;

use crate::{
    error::Error,
    oauth::secret,
    ports::Clients,
    value::{account::Client, grant_type::GrantType, scope::Scope},
};

/// The longest client id and secret (in bytes) a client may have; anything longer presented is refused
/// before any lookup.
pub const MAX_ID: usize = 128;
pub const MAX_SECRET: usize = 256;

/// What a request presented to identify its client, before anything was checked.
#[derive(Debug)]
pub enum Presented {
    Nothing,
    Basic { id: String, secret: String },
    Post { id: String, secret: String },
    IdOnly(String),
}

/// A client whose identity has been proven (or which is public and needs no proof).
#[derive(Debug, Clone)]
pub struct AuthenticatedClient {
    pub id: String,
    pub is_public: bool,
    pub grant_types: Vec<GrantType>,
    pub scopes: Scope,
}

impl AuthenticatedClient {
    pub fn may_use(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }
}

/// Where a client's row may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The database, now: for requests that write rows naming the client (a session, a revocation).
    Fresh,
    /// A row read in the last second (`clients::CACHE_TTL`), if the presented secret fits it: for
    /// requests that write nothing naming the client (introspection, the revocation feed, the
    /// client_credentials grant), where a client deleted a moment ago can do no more harm than the
    /// tokens it already holds, and for the refresh grant, whose rotation finds nothing once the
    /// client's sessions are gone.
    Recent,
}

pub async fn authenticate(
    store: &dyn Clients,
    presented: Presented,
    default_client_id: &str,
    lookup: Lookup,
) -> Result<AuthenticatedClient, Error> {
    let basic = matches!(presented, Presented::Basic { .. });
    let refuse = |detail| Error::InvalidClient { basic, detail };
    let (id, secret) = match presented {
        Presented::Nothing => (default_client_id.to_owned(), None),
        Presented::IdOnly(id) => (id, None),
        Presented::Basic { id, secret } | Presented::Post { id, secret } => (id, Some(secret)),
    };
    // Hashed before the lookup, so an unknown client costs what a known one does.
    let presented = secret.as_deref().map(secret::hash);
    let found = match lookup {
        Lookup::Fresh => store.find(&id).await?,
        Lookup::Recent => {
            store
                .find_recent(&id, &|client| check(client, presented.as_deref()).is_ok())
                .await?
        }
    };
    let Some(client) = found else {
        return Err(refuse("unknown client"));
    };
    check(&client, presented.as_deref()).map_err(refuse)?;
    Ok(client.into())
}

/// Whether `client` is proven by the hash of the secret presented, or by nothing for a public client.
fn check(client: &Client, presented: Option<&[u8]>) -> Result<(), &'static str> {
    match (client.is_public, &client.secret_hash, presented) {
        (true, _, None) => Ok(()),
        (true, _, Some(_)) => Err("public client presented a secret"),
        (false, Some(stored), Some(presented)) => {
            if bool::from(presented.ct_eq(stored)) {
                Ok(())
            } else {
                Err("wrong secret")
            }
        }
        (false, _, _) => Err("confidential client without a valid secret"),
    }
}

impl From<Client> for AuthenticatedClient {
    fn from(client: Client) -> Self {
        Self {
            id: client.id,
            is_public: client.is_public,
            grant_types: client.grant_types,
            scopes: client.scopes,
        }
    }
}
