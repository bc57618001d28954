//! Authentication of clients: JWT verification (HS256 with a shared secret or RS256 with a
//! public key, the algorithm pinned, `exp` enforced, `nbf` whenever present, `iss` and `aud`
//! when configured, the size bounded) into an [`Identity`] the rest of the system trusts.
//! Also issues tokens, for development and tests.

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
    /// Another issuer than the one configured.
    #[error("invalid token: issuer (iss) not accepted")]
    WrongIssuer,
    /// Another audience than the one configured.
    #[error("invalid token: audience (aud) not accepted")]
    WrongAudience,
    /// Over [`MAX_TOKEN_BYTES`].
    #[error("invalid token: longer than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
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
}

/// Verifies tokens with one key and one pinned algorithm.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    algorithm: &'static str,
}

impl Verifier {
    /// HS256 with a shared secret.
    pub fn hs256(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.is_empty() {
            return Err(KeyError::EmptySecret);
        }
        Ok(Self::new(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
            "HS256",
        ))
    }

    /// RS256 with an RSA public key in PEM form.
    pub fn rs256_pem(pem: &[u8]) -> Result<Self, KeyError> {
        let key = DecodingKey::from_rsa_pem(pem).map_err(|e| KeyError::BadPem(e.to_string()))?;
        Ok(Self::new(key, Algorithm::RS256, "RS256"))
    }

    fn new(key: DecodingKey, algorithm: Algorithm, name: &'static str) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        validation.validate_nbf = true;
        // Checked only when an audience is configured (`expecting`).
        validation.validate_aud = false;
        Self {
            key,
            validation,
            algorithm: name,
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

    /// Verifies a token and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.trim().is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLarge);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm(self.algorithm),
                ErrorKind::MissingRequiredClaim(claim) => {
                    AuthError::Malformed(format!("missing claim '{claim}'"))
                }
                _ => AuthError::Malformed(e.to_string()),
            },
        )?;
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
        let mut no_aud = good;
        no_aud.aud = None;
        assert!(matches!(
            verifier.verify(&sign_hs256(&no_aud, SECRET).unwrap()),
            Err(AuthError::Malformed(_))
        ));
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
