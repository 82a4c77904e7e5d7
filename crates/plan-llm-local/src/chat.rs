//! The chat template from the GGUF (`tokenizer.chat_template`), rendered with minijinja.

use plan_llm::{Message, Role};

use crate::error::LocalError;

/// ChatML, used when the model file carries no template.
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A chat template that turns a conversation into the model's prompt text.
#[derive(Clone, Debug)]
pub(crate) struct ChatTemplate {
    source: String,
}

impl ChatTemplate {
    pub(crate) fn new(source: Option<String>) -> Result<Self, LocalError> {
        let source = source.unwrap_or_else(|| CHATML.to_owned());
        // Parse once up front so a broken template fails at load, not at the first request.
        let env = environment();
        env.template_from_str(&source)
            .map_err(|e| LocalError::Template(e.to_string()))?;
        Ok(Self { source })
    }

    /// The prompt for `messages`, ending with the opening of the assistant's turn.
    pub(crate) fn render(&self, messages: &[Message]) -> Result<String, LocalError> {
        let messages: Vec<serde_json::Value> = messages
            .iter()
            .map(|m| {
                let mut content = m.content.clone();
                // The model has no native tool calls: show them as JSON text.
                for call in &m.tool_calls {
                    if !content.is_empty() {
                        content.push('\n');
                    }
                    content.push_str(
                        &serde_json::json!({"tool": call.name, "arguments": call.arguments})
                            .to_string(),
                    );
                }
                serde_json::json!({"role": role_name(m.role), "content": content})
            })
            .collect();
        let env = environment();
        env.render_str(
            &self.source,
            minijinja::context! {
                messages => minijinja::value::Serde(messages),
                add_generation_prompt => true,
                bos_token => "",
                eos_token => "<|im_end|>",
            },
        )
        .map_err(|e| LocalError::Template(e.to_string()))
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
        _ => "user",
    }
}

fn environment<'s>() -> minijinja::Environment<'s> {
    let mut env = minijinja::Environment::new();
    env.add_function(
        "raise_exception",
        |message: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                message,
            ))
        },
    );
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_fallback_renders_turns_and_generation_prompt() {
        let t = ChatTemplate::new(None).unwrap();
        let text = t
            .render(&[Message::system("Be brief."), Message::user("Hi")])
            .unwrap();
        assert_eq!(
            text,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn broken_template_fails_at_load() {
        let err = ChatTemplate::new(Some("{% for %}".into())).unwrap_err();
        assert!(err.to_string().contains("chat template"), "{err}");
    }
}
