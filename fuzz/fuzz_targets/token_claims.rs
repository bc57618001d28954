//! JWT claims after the signature: arbitrary bytes as the payload of a correctly signed
//! HS256 token. Verifying never panics; a token it accepts names a valid user and tenant.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use presence_auth::Verifier;
use sha2::Sha256;

const SECRET: &[u8] = b"fuzz-secret";

fuzz_target!(|data: &[u8]| {
    let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let signing = format!("{head}.{}", URL_SAFE_NO_PAD.encode(data));
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
    mac.update(signing.as_bytes());
    let token = format!(
        "{signing}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    );
    let verifier = Verifier::hs256(SECRET)
        .expect("a secret")
        .expecting(None, None);
    if let Ok(identity) = verifier.verify(&token) {
        assert!(!identity.user.as_str().is_empty());
        assert!(!identity.tenant.as_str().is_empty());
    }
});
