//! A model for the shadow tests and the demo: a Lambda handler that labels `{"q": n}`
//! the way its version's `MODEL` variable says, and prints the request/response line
//! coalmine shadows (through `coalmine-emf`'s shadow helper, as a real handler would).
//!
//! - `MODEL=steady`: always `{"label": "a"}`;
//! - `MODEL=flips-odd`: `"b"` for odd `q` (a candidate that disagrees on half);
//! - `MODEL=fails`: a function error on every request;
//! - `MODEL=noisy`: `"b"` for every third `q` asked while shadowed, else `"a"`: a model
//!   that disagrees with itself, as sampled generations do.

use coalmine_emf::shadow::Request;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let model = std::env::var("MODEL").unwrap_or_else(|_| "steady".into());
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let model = model.clone();
        async move {
            let request = Request::from_event(event.payload);
            let q = request.body.get("q").and_then(Value::as_u64).unwrap_or_default();
            let label = match model.as_str() {
                "fails" => return Err(Error::from(format!("model {model} cannot answer q={q}"))),
                "flips-odd" if q % 2 == 1 => "b",
                "noisy" if request.is_shadowed() && q.is_multiple_of(3) => "b",
                _ => "a",
            };
            let answer = json!({ "label": label, "q": q });
            request.record(&answer);
            Ok::<Value, Error>(answer)
        }
    }))
    .await
}
