//! Authentication of clients: JWT verification (HS256 with a shared secret or RS256 with a
//! public key, the algorithm pinned, `exp` enforced, `nbf` whenever present, `iss` and `aud`
//! when configured, the size bounded) into an [`Identity`] the rest of the system trusts.
//! Also issues tokens, for development and tests.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use presence_events::{IdError, TenantId, UserId, ViewerClass};
use serde::{Deserialize, Serialize};

/// Claims the system reads from a token.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Display / search name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Alternative to `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Gives the visibility class (`male`, `female`, anything else: `other`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    /// The customer (`default` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// `service` for backends allowed to act for users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Not valid before, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Longest token accepted, in bytes: real tokens are a few hundred; a larger one is refused
/// before it is decoded.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Who a verified client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Its tenant.
    pub tenant: TenantId,
    /// Its user id.
    pub user: UserId,
    /// Its visibility class.
    pub class: ViewerClass,
    /// Its display name, if the token gave one.
    pub username: Option<String>,
    /// Whether it is a backend service rather than a person.
    pub service: bool,
    /// When its token expires (`exp`, seconds since the epoch); `None` without a token
    /// (development's insecure user ids).
    pub expires_at: Option<u64>,
}

impl Identity {
    /// Builds an identity from claims already trusted (verified token or development mode).
    pub fn from_claims(
        sub: &str,
        gender: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<Self, AuthError> {
        Ok(Self {
            tenant: match tenant {
                Some(t) => TenantId::parse(t).map_err(AuthError::BadClaim)?,
                None => TenantId::default_tenant(),
            },
            user: UserId::parse(sub).map_err(AuthError::BadClaim)?,
            class: ViewerClass::from_gender(gender),
            username: None,
            service: false,
            expires_at: None,
        })
    }
}

/// Why a token was refused. The messages are what the client is told.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token.
    #[error("authentication required: send auth {{ token: \"<JWT>\" }}")]
    Missing,
    /// Past `exp`.
    #[error("invalid token: expired, get a new one")]
    Expired,
    /// Before `nbf`.
    #[error("invalid token: not valid yet (nbf is in the future)")]
    NotYetValid,
    /// Another issuer than the one configured, or none.
    #[error("invalid token: issuer (iss) missing or not accepted")]
    WrongIssuer,
    /// Another audience than the one configured, or none.
    #[error("invalid token: audience (aud) missing or not accepted")]
    WrongAudience,
    /// Over [`MAX_TOKEN_BYTES`].
    #[error("invalid token: longer than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    /// Its `kid` names no key accepted now (never configured, or retired by a rotation).
    #[error("invalid token: key id {0:?} is not (or no longer) accepted")]
    UnknownKey(String),
    /// No `kid`, and no key for tokens without one.
    #[error("invalid token: no key id (kid) in its header")]
    NoKeyId,
    /// Signature does not verify.
    #[error("invalid token: signature does not verify")]
    BadSignature,
    /// Signed with another algorithm than the one configured.
    #[error("invalid token: algorithm not accepted (expected {0})")]
    WrongAlgorithm(&'static str),
    /// Not a JWT, or claims missing (`sub`, `exp`).
    #[error("invalid token: {0}")]
    Malformed(String),
    /// A claim holds a value the system cannot use.
    #[error("invalid token: {0}")]
    BadClaim(IdError),
}

/// Why a verification key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// HS256 needs a secret.
    #[error("JWT_SECRET is empty: set it (HS256) or configure an RS256 public key")]
    EmptySecret,
    /// The PEM could not be read as an RSA public key.
    #[error("not an RSA public key in PEM form: {0}")]
    BadPem(String),
    /// The key set is not a usable JWKS.
    #[error("not a usable key set (JWKS, {{\"keys\": [...]}}): {0}")]
    BadKeySet(String),
}

/// A verification key and the one algorithm it verifies.
#[derive(Clone)]
struct Key {
    key: DecodingKey,
    algorithm: Algorithm,
    name: &'static str,
}

/// Keys by `kid`.
type KeysById = HashMap<String, Key>;

/// Verifies tokens: with the key of their `kid` (from a key set that can be replaced while
/// running, for rotation), or with the one configured key for tokens without a `kid`. Each
/// key pins its algorithm. Clones share the key set, so a rotation reaches all of them.
#[derive(Clone)]
pub struct Verifier {
    /// The key of tokens without a `kid`.
    default: Option<Key>,
    /// Keys by `kid`, replaced whole.
    keyed: Arc<RwLock<Arc<KeysById>>>,
    /// What every token must satisfy; the algorithm is set per key.
    validation: Validation,
}

impl Verifier {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.is_empty() {
            return Err(KeyError::EmptySecret);
        }
        Ok(Self::new(Some(Key {
            key: DecodingKey::from_secret(secret),
            algorithm: Algorithm::HS256,
            name: "HS256",
        })))
    }

    /// RS256 with an RSA public key in PEM form.
    pub fn rs256_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let key = DecodingKey::from_rsa_pem(pem).map_err(|e| KeyError::BadPem(e.to_string()))?;
        Ok(Self::new(Some(Key {
            key,
            algorithm: Algorithm::RS256,
            name: "RS256",
        })))
    }

    /// Only the keys of a key set (see [`Verifier::replace_keys`]): every token needs a `kid`.
    pub fn keyed_only() -> Self {
        Self::new(None)
    }

    fn new(default: Option<Key>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        validation.validate_nbf = true;
        // Checked only when an audience is configured (`expecting`).
        validation.validate_aud = false;
        Self {
            default,
            keyed: Arc::default(),
            validation,
        }
    }

    /// Also requires `iss` to be `issuer` and `aud` to name `audience`, where given.
    pub fn expecting(mut self, issuer: Option<&str>, audience: Option<&str>) -> Self {
        if let Some(issuer) = issuer {
            self.validation.set_issuer(&[issuer]);
            self.validation.required_spec_claims.insert("iss".into());
        }
        if let Some(audience) = audience {
            self.validation.set_audience(&[audience]);
            self.validation.validate_aud = true;
            self.validation.required_spec_claims.insert("aud".into());
        }
        self
    }

    /// Replaces the keys chosen by `kid` with those of `jwks` (a JSON Web Key Set: `oct` keys
    /// verify HS256, `RSA` keys RS256, or the `alg` a key names); returns how many there are
    /// now. A key left out is retired: tokens naming it are refused from now on, while
    /// connections admitted with it live on until their token's `exp`. On an error the keys
    /// in use stay as they were.
    pub fn replace_keys(&self, jwks: &[u8]) -> Result<usize, KeyError> {
        let set: JwkSet =
            serde_json::from_slice(jwks).map_err(|e| KeyError::BadKeySet(e.to_string()))?;
        let mut keys = KeysById::new();
        for jwk in &set.keys {
            let kid = jwk
                .common
                .key_id
                .clone()
                .ok_or_else(|| KeyError::BadKeySet("a key without \"kid\"".into()))?;
            let (algorithm, name) = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::OctetKey(_), None | Some(KeyAlgorithm::HS256)) => {
                    (Algorithm::HS256, "HS256")
                }
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => {
                    (Algorithm::RS256, "RS256")
                }
                _ => {
                    return Err(KeyError::BadKeySet(format!(
                        "key {kid:?}: only oct (HS256) and RSA (RS256) keys are accepted"
                    )));
                }
            };
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| KeyError::BadKeySet(format!("key {kid:?}: {e}")))?;
            if keys
                .insert(
                    kid.clone(),
                    Key {
                        key,
                        algorithm,
                        name,
                    },
                )
                .is_some()
            {
                return Err(KeyError::BadKeySet(format!("key id {kid:?} appears twice")));
            }
        }
        let count = keys.len();
        *self.keyed.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(count)
    }

    /// Verifies a token and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.trim().is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let keyed;
        let key = match &header.kid {
            Some(kid) => {
                keyed = self.keyed.read().unwrap_or_else(|e| e.into_inner()).clone();
                match keyed.get(kid) {
                    Some(key) => key,
                    // A kid the operator never configured, with only one key: that key.
                    None if keyed.is_empty() && self.default.is_some() => {
                        self.default.as_ref().ok_or(AuthError::NoKeyId)?
                    }
                    None => return Err(AuthError::UnknownKey(kid.clone())),
                }
            }
            None => self.default.as_ref().ok_or(AuthError::NoKeyId)?,
        };
        let mut validation = self.validation.clone();
        validation.algorithms = vec![key.algorithm];
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| {
            match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm(key.name),
                // Required because an issuer or audience is configured: not the one wanted.
                ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::WrongIssuer,
                ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => {
                    AuthError::WrongAudience
                }
                ErrorKind::MissingRequiredClaim(claim) => {
                    AuthError::Malformed(format!("missing claim '{claim}'"))
                }
                _ => AuthError::Malformed(e.to_string()),
            }
        })?;
        let claims = data.claims;
        let mut identity = Identity::from_claims(
            &claims.sub,
            claims.gender.as_deref(),
            claims.tenant.as_deref(),
        )?;
        identity.username = claims.username.or(claims.name);
        identity.service = claims.role.as_deref() == Some("service");
        identity.expires_at = Some(claims.exp);
        Ok(identity)
    }
}

/// Issues an HS256 token (development, tests, `presence token`).
pub fn sign_hs256(claims: &Claims, secret: &[u8]) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
}

/// Issues an HS256 token naming key `kid` (a key of a rotated key set).
pub fn sign_hs256_with_kid(
    claims: &Claims,
    secret: &[u8],
    kid: &str,
) -> Result<String, jsonwebtoken::errors::Error> {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret";

    fn claims(sub: &str, exp: u64) -> Claims {
        Claims {
            sub: sub.into(),
            exp,
            gender: Some("female".into()),
            ..Default::default()
        }
    }

    fn in_an_hour() -> u64 {
        jsonwebtoken::get_current_timestamp() + 3600
    }

    #[test]
    fn a_valid_token_gives_its_identity() {
        let token = sign_hs256(&claims("ayse", in_an_hour()), SECRET).unwrap();
        let id = Verifier::hs256(SECRET).unwrap().verify(&token).unwrap();
        assert_eq!(id.user.as_str(), "ayse");
        assert_eq!(id.class.as_str(), "female");
        assert_eq!(id.tenant.as_str(), "default");
    }

    #[test]
    fn an_expired_token_is_refused_when_an_issuer_and_audience_are_expected_too() {
        let verifier = Verifier::hs256(SECRET)
            .unwrap()
            .expecting(Some("presence-auth"), Some("presence-app"));
        let good = Claims {
            iss: Some("presence-auth".into()),
            aud: Some("presence-app".into()),
            ..claims("ayse", in_an_hour())
        };
        assert!(verifier.verify(&sign_hs256(&good, SECRET).unwrap()).is_ok());
        let expired = Claims {
            exp: jsonwebtoken::get_current_timestamp() - 60,
            ..good
        };
        assert_eq!(
            verifier
                .verify(&sign_hs256(&expired, SECRET).unwrap())
                .err(),
            Some(AuthError::Expired)
        );
    }

    #[test]
    fn expired_forged_and_malformed_tokens_are_refused_with_their_reason() {
        let verifier = Verifier::hs256(SECRET).unwrap();
        let expired = sign_hs256(&claims("ayse", 1_000), SECRET).unwrap();
        assert_eq!(verifier.verify(&expired), Err(AuthError::Expired));
        let forged = sign_hs256(&claims("ayse", in_an_hour()), b"other").unwrap();
        assert_eq!(verifier.verify(&forged), Err(AuthError::BadSignature));
        assert!(matches!(
            verifier.verify("not-a-jwt"),
            Err(AuthError::Malformed(_))
        ));
        assert_eq!(verifier.verify(""), Err(AuthError::Missing));
    }

    #[test]
    fn the_algorithm_is_pinned() {
        // An HS384 token must not pass an HS256 verifier, even with the right secret.
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &claims("ayse", in_an_hour()),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(
            Verifier::hs256(SECRET).unwrap().verify(&token),
            Err(AuthError::WrongAlgorithm("HS256"))
        );
    }

    #[test]
    fn a_token_not_valid_yet_is_refused_and_one_valid_now_passes() {
        let verifier = Verifier::hs256(SECRET).unwrap();
        let mut later = claims("ayse", in_an_hour());
        later.nbf = Some(jsonwebtoken::get_current_timestamp() + 3_600);
        let token = sign_hs256(&later, SECRET).unwrap();
        assert_eq!(verifier.verify(&token), Err(AuthError::NotYetValid));
        later.nbf = Some(jsonwebtoken::get_current_timestamp() - 60);
        let token = sign_hs256(&later, SECRET).unwrap();
        assert_eq!(verifier.verify(&token).unwrap().expires_at, Some(later.exp));
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let verifier = Verifier::hs256(SECRET)
            .unwrap()
            .expecting(Some("https://id.example"), Some("presence"));
        let mut good = claims("ayse", in_an_hour());
        good.iss = Some("https://id.example".into());
        good.aud = Some("presence".into());
        assert!(verifier.verify(&sign_hs256(&good, SECRET).unwrap()).is_ok());
        let mut wrong_aud = good.clone();
        wrong_aud.aud = Some("billing".into());
        assert_eq!(
            verifier.verify(&sign_hs256(&wrong_aud, SECRET).unwrap()),
            Err(AuthError::WrongAudience)
        );
        let mut wrong_iss = good.clone();
        wrong_iss.iss = Some("https://evil.example".into());
        assert_eq!(
            verifier.verify(&sign_hs256(&wrong_iss, SECRET).unwrap()),
            Err(AuthError::WrongIssuer)
        );
        let mut no_aud = good.clone();
        no_aud.aud = None;
        assert_eq!(
            verifier.verify(&sign_hs256(&no_aud, SECRET).unwrap()),
            Err(AuthError::WrongAudience)
        );
        let mut no_iss = good;
        no_iss.iss = None;
        assert_eq!(
            verifier.verify(&sign_hs256(&no_iss, SECRET).unwrap()),
            Err(AuthError::WrongIssuer)
        );
        // Unconfigured, an audience in the token is not held against it.
        let mut any_aud = claims("ayse", in_an_hour());
        any_aud.aud = Some("anything".into());
        assert!(
            Verifier::hs256(SECRET)
                .unwrap()
                .verify(&sign_hs256(&any_aud, SECRET).unwrap())
                .is_ok()
        );
    }

    #[test]
    fn an_oversized_token_is_refused_before_decoding() {
        let mut huge = claims("ayse", in_an_hour());
        huge.username = Some("x".repeat(MAX_TOKEN_BYTES));
        let token = sign_hs256(&huge, SECRET).unwrap();
        assert_eq!(
            Verifier::hs256(SECRET).unwrap().verify(&token),
            Err(AuthError::TooLarge)
        );
    }

    fn jwks(keys: &[(&str, &[u8])]) -> Vec<u8> {
        use base64::Engine;
        let keys: Vec<serde_json::Value> = keys
            .iter()
            .map(|(kid, secret)| {
                serde_json::json!({
                    "kty": "oct",
                    "kid": kid,
                    "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn tokens_are_verified_with_the_key_their_kid_names_and_a_retired_key_is_refused() {
        let verifier = Verifier::keyed_only();
        assert_eq!(
            verifier
                .replace_keys(&jwks(&[("k1", b"one-secret"), ("k2", b"two-secret")]))
                .unwrap(),
            2
        );
        let with = |kid: &str, secret: &[u8]| {
            sign_hs256_with_kid(&claims("ayse", in_an_hour()), secret, kid).unwrap()
        };
        assert!(verifier.verify(&with("k1", b"one-secret")).is_ok());
        assert!(verifier.verify(&with("k2", b"two-secret")).is_ok());
        // The right kid with another key's secret is a forgery.
        assert_eq!(
            verifier.verify(&with("k1", b"two-secret")),
            Err(AuthError::BadSignature)
        );
        // Without a kid there is no key to use.
        let plain = sign_hs256(&claims("ayse", in_an_hour()), b"one-secret").unwrap();
        assert_eq!(verifier.verify(&plain), Err(AuthError::NoKeyId));

        // Rotation: k1 retired, k3 added; the clone (another holder) sees it too.
        let holder = verifier.clone();
        verifier
            .replace_keys(&jwks(&[("k2", b"two-secret"), ("k3", b"three-secret")]))
            .unwrap();
        assert_eq!(
            holder.verify(&with("k1", b"one-secret")),
            Err(AuthError::UnknownKey("k1".into()))
        );
        assert!(holder.verify(&with("k3", b"three-secret")).is_ok());
        // A broken key set changes nothing.
        assert!(
            verifier
                .replace_keys(b"{\"keys\": [{\"kty\": \"oct\"}]}")
                .is_err()
        );
        assert!(verifier.replace_keys(b"not json").is_err());
        assert!(holder.verify(&with("k2", b"two-secret")).is_ok());
    }

    #[test]
    fn a_configured_secret_verifies_tokens_without_a_kid_beside_a_key_set() {
        let verifier = Verifier::hs256(SECRET).unwrap();
        let plain = sign_hs256(&claims("ayse", in_an_hour()), SECRET).unwrap();
        // A kid nobody configured, while there is no key set: the one key.
        let named = sign_hs256_with_kid(&claims("ayse", in_an_hour()), SECRET, "any").unwrap();
        assert!(verifier.verify(&plain).is_ok());
        assert!(verifier.verify(&named).is_ok());
        verifier
            .replace_keys(&jwks(&[("k1", b"one-secret")]))
            .unwrap();
        assert!(verifier.verify(&plain).is_ok());
        assert_eq!(
            verifier.verify(&named),
            Err(AuthError::UnknownKey("any".into()))
        );
    }

    #[test]
    fn unusable_claims_are_refused() {
        let mut bad_tenant = claims("ayse", in_an_hour());
        bad_tenant.tenant = Some("a.b".into());
        let token = sign_hs256(&bad_tenant, SECRET).unwrap();
        assert!(matches!(
            Verifier::hs256(SECRET).unwrap().verify(&token),
            Err(AuthError::BadClaim(_))
        ));
    }
}
