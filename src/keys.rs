//! The key store: RSA private keys as PKCS#8 PEM files in `keys.dir`, one file per key, named by creation
//! time. It chooses the signing key, and serialises the JWKS once per key set.
//!
//! The `rsa` crate only generates keys and reads their public parts; signing and verifying are
//! aws-lc-rs's, whose private-key operations are constant-time (RUSTSEC-2023-0071). Each key is parsed
//! once, when its file is read, and kept parsed beside the key.

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::{Context, bail};
use aws_lc_rs::{
    rand::SystemRandom,
    signature::{
        KeyPair, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair,
    },
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use chrono::{DateTime, NaiveDateTime, Utc};
use rsa::{
    RsaPrivateKey,
    pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding, SecretDocument},
    traits::PublicKeyParts,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// How key files are named: the creation time, so that ordering by name is ordering by age.
const FILE_TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// The shortest RSA modulus accepted (RFC 7518 §3.3; aws-lc-rs signs with nothing shorter).
const MIN_BITS: usize = 2048;

/// One signing key and what is published of it.
pub struct Key {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    pub created_at: DateTime<Utc>,
    pub path: PathBuf,
    /// The private key as aws-lc-rs signs with it.
    pair: RsaKeyPair,
    /// Its public half as aws-lc-rs verifies with it, for RS256 only.
    public: ParsedPublicKey,
    n: String,
    e: String,
}

impl Key {
    /// The RS256 signature of `message` (RSASSA-PKCS1-v1_5 with SHA-256, RFC 7518 §3.3).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, aws_lc_rs::error::Unspecified> {
        let mut signature = vec![0; self.pair.public_modulus_len()];
        self.pair.sign(
            &RSA_PKCS1_SHA256,
            &SystemRandom::new(),
            message,
            &mut signature,
        )?;
        Ok(signature)
    }

    /// Whether `signature` is this key's RS256 signature of `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        self.public.verify_sig(message, signature).is_ok()
    }

    /// The key as the JWKS publishes it.
    fn jwk(&self) -> Jwk<'_> {
        Jwk {
            alg: "RS256",
            e: &self.e,
            kid: &self.kid,
            kty: "RSA",
            n: &self.n,
            use_: "sig",
        }
    }
}

/// The JWKS document (RFC 7517 §5).
#[derive(Serialize)]
pub struct Jwks<'a> {
    keys: Vec<Jwk<'a>>,
}

/// One RSA public key (RFC 7517 §4, RFC 7518 §6.3). Its members are in lexicographic order, the order
/// earlier versions wrote, so that instances of either version agree on a key set's ETag.
#[derive(Serialize)]
struct Jwk<'a> {
    alg: &'a str,
    e: &'a str,
    kid: &'a str,
    kty: &'a str,
    n: &'a str,
    #[serde(rename = "use")]
    use_: &'a str,
}

/// The keys of one scan of the folder, with the JWKS bytes built once from them.
pub struct KeySet {
    keys: Vec<Arc<Key>>,
    signing: Arc<Key>,
    jwks: Bytes,
    etag: String,
}

impl KeySet {
    /// The key new tokens are signed with.
    pub fn signing(&self) -> &Arc<Key> {
        &self.signing
    }

    /// The published key with this `kid`; only published keys verify tokens.
    pub fn find(&self, kid: &str) -> Option<&Arc<Key>> {
        self.keys.iter().find(|k| k.kid == kid)
    }

    pub fn keys(&self) -> &[Arc<Key>] {
        &self.keys
    }

    /// The serialised JWKS document.
    pub fn jwks(&self) -> &Bytes {
        &self.jwks
    }

    /// A strong ETag derived from the published key set, so instances with the same keys agree.
    pub fn etag(&self) -> &str {
        &self.etag
    }
}

/// A file in the key folder that cannot sign, and why; it names the file, never any key material.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason:#}", path.display())]
pub struct Refused {
    pub path: PathBuf,
    pub reason: anyhow::Error,
}

/// Shares the current [`KeySet`]; readers take a cheap `Arc` clone and never wait on a scan.
pub struct KeyStore {
    dir: PathBuf,
    signs_after: Duration,
    outlives: Duration,
    current: RwLock<Arc<KeySet>>,
}

impl KeyStore {
    /// Loads every key in `dir`. A folder without a key, or with a file that cannot sign, is an error:
    /// the operator learns of a bad file at start rather than from a failing token request.
    pub fn load(dir: &Path, signs_after: Duration, outlives: Duration) -> anyhow::Result<Self> {
        let (set, refused) = scan(dir, signs_after, outlives, Utc::now())?;
        if !refused.is_empty() {
            bail!(
                "keys.dir holds a file that cannot sign: {}; remove or replace it",
                list(&refused)
            );
        }
        Ok(Self {
            dir: dir.to_owned(),
            signs_after,
            outlives,
            current: RwLock::new(Arc::new(set)),
        })
    }

    pub fn current(&self) -> Arc<KeySet> {
        self.current.read().expect("key set lock").clone()
    }

    /// Reads the folder again (a new key, a pruned one, or time moving a key to another state). The
    /// JWKS bytes and ETag change only when the published set does. A file that cannot sign is logged
    /// and left out, so that it cannot keep the other keys from changing. Returns whether anything changed.
    pub fn rescan(&self) -> anyhow::Result<bool> {
        let (set, refused) = scan(&self.dir, self.signs_after, self.outlives, Utc::now())?;
        for file in &refused {
            tracing::error!(
                file = %file.path.display(),
                reason = format!("{:#}", file.reason),
                "key file refused: left out of the key set"
            );
        }
        let mut current = self.current.write().expect("key set lock");
        let changed = current.etag != set.etag || current.signing.kid != set.signing.kid;
        if changed {
            *current = Arc::new(set);
        }
        Ok(changed)
    }
}

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published, not signing yet: caches learn it before any token carries it.
    Next,
    /// Signs new tokens.
    Signing,
    /// No longer signs, still published: tokens it signed may still be live.
    Retiring,
    /// Every token it signed has expired; `keys prune` removes it.
    Expired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Signing => "signing",
            Self::Retiring => "retiring",
            Self::Expired => "expired",
        }
    }
}

/// The state of each key, given their creation times in ascending order. The signing key is the newest
/// one created at least `signs_after` ago (the oldest while none is); an older key retires when its
/// successor becomes eligible and expires `outlives` later, when the last token it signed has. Both come
/// from the configuration (`Settings::key_signs_after`, `Settings::key_outlives_successor`).
pub fn classify(
    created: &[DateTime<Utc>],
    now: DateTime<Utc>,
    signs_after: Duration,
    outlives: Duration,
) -> Vec<KeyState> {
    let signs_after = chrono::Duration::from_std(signs_after).unwrap_or(chrono::Duration::MAX);
    let outlives = chrono::Duration::from_std(outlives).unwrap_or(chrono::Duration::MAX);
    let signing = created
        .iter()
        .rposition(|&c| c + signs_after <= now)
        .unwrap_or(0);
    (0..created.len())
        .map(|i| match i.cmp(&signing) {
            std::cmp::Ordering::Greater => KeyState::Next,
            std::cmp::Ordering::Equal => KeyState::Signing,
            std::cmp::Ordering::Less if created[i + 1] + signs_after + outlives > now => {
                KeyState::Retiring
            }
            std::cmp::Ordering::Less => KeyState::Expired,
        })
        .collect()
}

fn scan(
    dir: &Path,
    signs_after: Duration,
    outlives: Duration,
    now: DateTime<Utc>,
) -> anyhow::Result<(KeySet, Vec<Refused>)> {
    let (keys, refused) = read_dir(dir)?;
    let created: Vec<_> = keys.iter().map(|k| k.created_at).collect();
    let states = classify(&created, now, signs_after, outlives);
    let signing = keys[states
        .iter()
        .position(|&s| s == KeyState::Signing)
        .unwrap_or(0)]
    .clone();
    let keys: Vec<_> = keys
        .into_iter()
        .zip(states)
        .filter(|(_, state)| *state != KeyState::Expired)
        .map(|(k, _)| k)
        .collect();

    let jwks = Jwks {
        keys: keys.iter().map(|k| k.jwk()).collect(),
    };
    let jwks = Bytes::from(serde_json::to_vec(&jwks)?);
    let etag = crate::value::etag::of(&jwks);
    let set = KeySet {
        keys,
        signing,
        jwks,
        etag,
    };
    Ok((set, refused))
}

/// Every usable key in `dir`, oldest first, and the files refused; an error when no key is usable.
fn read_dir(dir: &Path) -> anyhow::Result<(Vec<Arc<Key>>, Vec<Refused>)> {
    let (mut keys, mut refused) = (Vec::new(), Vec::new());
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading the key folder {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "pem") {
            match read_key(&path) {
                Ok(key) => keys.push(Arc::new(key)),
                Err(reason) => refused.push(Refused { path, reason }),
            }
        }
    }
    if keys.is_empty() {
        let refused = if refused.is_empty() {
            String::new()
        } else {
            format!(" (refused: {})", list(&refused))
        };
        bail!(
            "no signing key in {}{refused}: run `portcullis keys generate` (or `make run`, which does it)",
            dir.display()
        );
    }
    keys.sort_by(|a, b| (a.created_at, &a.kid).cmp(&(b.created_at, &b.kid)));
    keys.dedup_by(|a, b| a.kid == b.kid);
    Ok((keys, refused))
}

/// The refused files and their reasons, for one error message.
fn list(refused: &[Refused]) -> String {
    refused
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What `keys list` and `keys prune` see in the folder.
pub struct Inventory {
    /// Every usable key with its state now, oldest first.
    pub keys: Vec<(Arc<Key>, KeyState)>,
    /// The files left alone because they cannot sign.
    pub refused: Vec<Refused>,
}

/// The keys in `dir` with their states now, and the files refused.
pub fn inventory(
    dir: &Path,
    signs_after: Duration,
    outlives: Duration,
) -> anyhow::Result<Inventory> {
    let (keys, refused) = read_dir(dir)?;
    let created: Vec<_> = keys.iter().map(|k| k.created_at).collect();
    let states = classify(&created, Utc::now(), signs_after, outlives);
    Ok(Inventory {
        keys: keys.into_iter().zip(states).collect(),
        refused,
    })
}

/// Deletes the keys whose every token has expired; returns them, and the files refused. A key that may
/// still verify a live token is never removed.
pub fn prune(
    dir: &Path,
    signs_after: Duration,
    outlives: Duration,
) -> anyhow::Result<(Vec<Arc<Key>>, Vec<Refused>)> {
    let mut removed = Vec::new();
    let Inventory { keys, refused } = inventory(dir, signs_after, outlives)?;
    for (key, state) in keys {
        if state == KeyState::Expired {
            std::fs::remove_file(&key.path)
                .with_context(|| format!("removing {}", key.path.display()))?;
            removed.push(key);
        }
    }
    Ok((removed, refused))
}

/// One key file, accepted only if it can sign; the error says why not (the caller names the file).
fn read_key(path: &Path) -> anyhow::Result<Key> {
    let pem = std::fs::read_to_string(path).context("cannot be read as text")?;
    let private =
        RsaPrivateKey::from_pkcs8_pem(&pem).context("not a PKCS#8 PEM RSA private key")?;
    let bits = private.n().bits();
    if bits < MIN_BITS {
        bail!("an RSA key of {bits} bits is too short: at least {MIN_BITS} are required");
    }
    let der = SecretDocument::from_pkcs8_pem(&pem).context("not a PKCS#8 PEM RSA private key")?;
    let pair = RsaKeyPair::from_pkcs8(der.as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("aws-lc-rs cannot sign with it")?;
    let public = ParsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, pair.public_key())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("aws-lc-rs cannot verify with it")?;
    let n = URL_SAFE_NO_PAD.encode(private.n().to_bytes_be());
    let e = URL_SAFE_NO_PAD.encode(private.e().to_bytes_be());
    let key = Key {
        kid: thumbprint(&n, &e),
        created_at: created_at(path).context("its creation time cannot be read")?,
        path: path.to_owned(),
        pair,
        public,
        n,
        e,
    };
    // Used once here, so that a key that loads cannot fail a token request later.
    let check = b"portcullis key check";
    if !key
        .sign(check)
        .is_ok_and(|signature| key.verifies(check, &signature))
    {
        bail!("aws-lc-rs cannot sign with it");
    }
    Ok(key)
}

/// The creation time from the file name, or the file's modification time for a key added by hand.
fn created_at(path: &Path) -> anyhow::Result<DateTime<Utc>> {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let stamp = stem.split('-').next().unwrap_or("");
    if let Ok(t) = NaiveDateTime::parse_from_str(stamp, FILE_TIME_FORMAT) {
        return Ok(t.and_utc());
    }
    Ok(std::fs::metadata(path)?.modified()?.into())
}

/// RFC 7638 §3: SHA-256 over the required members in lexicographic order, without white space.
pub fn thumbprint(n: &str, e: &str) -> String {
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// Generates a new key into `dir` as PKCS#8 PEM, readable by its owner only. Returns its path and kid.
pub fn generate(dir: &Path, bits: usize) -> anyhow::Result<(PathBuf, String)> {
    if ![2048, 3072, 4096].contains(&bits) {
        bail!("--bits must be 2048, 3072 or 4096");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = RsaPrivateKey::new(&mut rand::thread_rng(), bits)?;
    let pem = key.to_pkcs8_pem(LineEnding::LF)?;
    let n = URL_SAFE_NO_PAD.encode(key.n().to_bytes_be());
    let e = URL_SAFE_NO_PAD.encode(key.e().to_bytes_be());
    let kid = thumbprint(&n, &e);
    let path = dir.join(format!(
        "{}-{}.pem",
        Utc::now().format(FILE_TIME_FORMAT),
        &kid[..8]
    ));
    let mut file = open_private(&path)?;
    file.write_all(pem.as_bytes())?;
    file.sync_all()?;
    Ok((path, kid))
}

#[cfg(unix)]
fn open_private(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // RFC 7638 §3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        assert_eq!(
            thumbprint(n, "AQAB"),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn a_generated_key_is_private_and_its_kid_is_the_thumbprint_jsonwebtoken_computes() {
        let dir = tempfile::tempdir().unwrap();
        let (path, kid) = generate(dir.path(), 2048).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let pem = std::fs::read(&path).unwrap();
        assert!(pem.starts_with(b"-----BEGIN PRIVATE KEY-----"));
        let enc = jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap();
        let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, jsonwebtoken::Algorithm::RS256)
            .unwrap();
        assert_eq!(
            jwk.thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
                .unwrap(),
            kid
        );
        let store = KeyStore::load(
            dir.path(),
            Duration::from_secs(300),
            Duration::from_secs(900),
        )
        .unwrap();
        assert_eq!(store.current().signing().kid, kid);
    }

    #[test]
    fn the_jwks_lists_its_members_in_lexicographic_order_so_every_version_agrees_on_its_etag() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), 2048).unwrap();
        let store = KeyStore::load(dir.path(), Duration::ZERO, Duration::from_secs(900)).unwrap();
        let set = store.current();
        let key = set.signing();
        let expected = format!(
            r#"{{"keys":[{{"alg":"RS256","e":"{}","kid":"{}","kty":"RSA","n":"{}","use":"sig"}}]}}"#,
            key.e, key.kid, key.n
        );
        assert_eq!(std::str::from_utf8(set.jwks()).unwrap(), expected);
    }

    #[test]
    fn keys_move_from_next_to_signing_to_retiring_to_expired() {
        let t0 = Utc::now();
        let min = |m: i64| t0 + chrono::Duration::minutes(m);
        let ahead = Duration::from_secs(300);
        let ttl = Duration::from_secs(900);
        let state = |created: &[DateTime<Utc>], now| classify(created, now, ahead, ttl);
        use KeyState::*;
        // A fresh installation: the only key signs at once.
        assert_eq!(state(&[t0], t0), [Signing]);
        // A rotation: the new key is only published for five minutes…
        assert_eq!(state(&[t0, min(60)], min(60)), [Signing, Next]);
        assert_eq!(state(&[t0, min(60)], min(64)), [Signing, Next]);
        // …then signs, while the old one retires for one access-token lifetime…
        assert_eq!(state(&[t0, min(60)], min(65)), [Retiring, Signing]);
        assert_eq!(state(&[t0, min(60)], min(79)), [Retiring, Signing]);
        // …and expires when the last token it signed has.
        assert_eq!(state(&[t0, min(60)], min(80)), [Expired, Signing]);
        // Two fresh keys: the oldest signs until the newer has been published long enough.
        assert_eq!(state(&[t0, min(1)], min(2)), [Signing, Next]);
    }

    fn pem_of(label: &str, der: &[u8]) -> String {
        rsa::pkcs8::der::pem::encode_string(label, LineEnding::LF, der).unwrap()
    }

    /// Key files that must never sign, each with what its refusal must say.
    fn unusable_files(good_pem: &str) -> Vec<(&'static str, String, &'static str)> {
        use aws_lc_rs::{
            rand::SystemRandom,
            signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair},
        };
        use rsa::pkcs1::{EncodeRsaPrivateKey, der::Encode};
        let weak = RsaPrivateKey::new(&mut rand::thread_rng(), 1024)
            .unwrap()
            .to_pkcs8_pem(LineEnding::LF)
            .unwrap()
            .to_string();
        let ec =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                .unwrap();
        // A 2048-bit key whose CRT exponent is wrong: the `rsa` crate reads it, aws-lc-rs cannot sign.
        let pkcs1 = RsaPrivateKey::from_pkcs8_pem(good_pem)
            .unwrap()
            .to_pkcs1_der()
            .unwrap();
        let mut broken = rsa::pkcs1::RsaPrivateKey::try_from(pkcs1.as_bytes()).unwrap();
        broken.exponent1 = broken.exponent2;
        let broken = broken.to_der().unwrap();
        let broken = rsa::pkcs8::PrivateKeyInfo::new(rsa::pkcs1::ALGORITHM_ID, &broken)
            .to_der()
            .unwrap();
        vec![
            ("weak.pem", weak, "1024 bits"),
            ("garbage.pem", "not a key at all\n".into(), "not a PKCS#8"),
            (
                "truncated.pem",
                good_pem[..good_pem.len() / 2].to_owned(),
                "not a PKCS#8",
            ),
            ("ec.pem", pem_of("PRIVATE KEY", ec.as_ref()), "not a PKCS#8"),
            (
                "inconsistent.pem",
                pem_of("PRIVATE KEY", &broken),
                "aws-lc-rs cannot sign",
            ),
        ]
    }

    #[test]
    fn a_short_or_unusable_key_file_stops_the_start_naming_the_file() {
        let good = tempfile::tempdir().unwrap();
        let (good_path, _) = generate(good.path(), 2048).unwrap();
        let good_pem = std::fs::read_to_string(&good_path).unwrap();
        for (name, contents, reason) in unusable_files(&good_pem) {
            let dir = tempfile::tempdir().unwrap();
            std::fs::copy(&good_path, dir.path().join(good_path.file_name().unwrap())).unwrap();
            let bad = dir.path().join(name);
            std::fs::write(&bad, &contents).unwrap();

            let err = KeyStore::load(dir.path(), Duration::ZERO, Duration::from_secs(900))
                .err()
                .unwrap_or_else(|| panic!("{name} was accepted"));

            let message = format!("{err:#}");
            assert!(
                message.contains(&bad.display().to_string()),
                "{name}: {message}"
            );
            assert!(message.contains(reason), "{name}: {message}");
            // No key material: not one line of either PEM's body.
            for line in contents
                .lines()
                .chain(good_pem.lines())
                .filter(|l| l.len() > 20)
            {
                assert!(!message.contains(line), "{name}: {message}");
            }
        }
    }

    #[test]
    fn a_rescan_leaves_an_unusable_file_out_and_still_takes_a_new_good_key() {
        // The running key is a year old, so that a key generated now is the newer one.
        let (staging, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (good_path, old_kid) = generate(staging.path(), 2048).unwrap();
        let good_pem = std::fs::read_to_string(&good_path).unwrap();
        let year_ago = Utc::now() - chrono::Duration::days(365);
        let name = format!("{}-old.pem", year_ago.format(FILE_TIME_FORMAT));
        std::fs::write(dir.path().join(name), &good_pem).unwrap();
        let store = KeyStore::load(dir.path(), Duration::ZERO, Duration::from_secs(900)).unwrap();
        let bad = unusable_files(&good_pem);
        for (name, contents, _) in &bad {
            std::fs::write(dir.path().join(name), contents).unwrap();
        }
        let signs = |store: &KeyStore| {
            let set = store.current();
            set.signing()
                .sign(b"header.payload")
                .map(|_| set.signing().kid.clone())
        };

        store.rescan().unwrap();
        assert_eq!(signs(&store).unwrap(), old_kid);
        let published: Vec<_> = store
            .current()
            .keys()
            .iter()
            .map(|k| k.kid.clone())
            .collect();
        assert_eq!(published, std::slice::from_ref(&old_kid));
        let (_, refused) = scan(
            dir.path(),
            Duration::ZERO,
            Duration::from_secs(900),
            Utc::now(),
        )
        .unwrap();
        let mut refused: Vec<_> = refused.iter().map(|r| r.path.clone()).collect();
        refused.sort();
        let mut expected: Vec<_> = bad.iter().map(|(name, ..)| dir.path().join(name)).collect();
        expected.sort();
        assert_eq!(refused, expected);

        // The bad files stay, and a new key beside them is still picked up (and signs at once).
        let (_, new_kid) = generate(dir.path(), 2048).unwrap();
        assert!(store.rescan().unwrap());
        assert_eq!(signs(&store).unwrap(), new_kid);
        assert!(store.current().find(&old_kid).is_some());
    }

    #[test]
    fn an_empty_folder_says_how_to_make_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let err = KeyStore::load(dir.path(), Duration::ZERO, Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("portcullis keys generate"),
            "{err}"
        );
    }
}
