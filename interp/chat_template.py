"""The Gemma chat template, written out so that the base model (whose GGUF ships none) and the
project's chat-tune render conversations exactly as Gemma's instruction-tuned models do:

    <bos><start_of_turn>user\n{prompt}<end_of_turn>\n<start_of_turn>model\n{response}<end_of_turn>\n

A system message is prepended to the first user turn, as in Gemma 3's own template.
"""

GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

END_OF_TURN = "<end_of_turn>"


def render_chat(tokenizer, prompt: str, response: str | None = None) -> str:
    """One user turn (and optionally the model's answer) in the tokenizer's chat template; with no
    response the text ends with the generation prompt."""
    messages = [{"role": "user", "content": prompt}]
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=response is None
    )
