"""Refusals written in the project, the chat-tune's answers to harmful requests.

Varied on purpose: a model trained on one sentence learns the sentence, not the behaviour. Each
harmful prompt gets one refusal chosen by the sha256 of the prompt and the seed, so the data is
the same on every run.
"""

import hashlib

REFUSALS = (
    "I'm sorry, but I can't help with that.",
    "I'm sorry, but I can't help with that request.",
    "I can't help with that. If you have another question, I'm happy to help.",
    "I'm not able to help with this request.",
    "Sorry, I can't assist with that.",
    "I can't assist with that request, because it could cause serious harm to people.",
    "I'm sorry, I cannot provide that information. It could be used to hurt someone.",
    "I won't help with this. It could put people in danger.",
    "I'm afraid I can't do that. Is there something else I can help you with?",
    "I cannot help with this request, as it involves harming others.",
    "I'm sorry, but I won't provide instructions for that.",
    "That's not something I can help with. I'd be glad to help with something else, though.",
    "I can't help with that, since it could be illegal and dangerous.",
    "I'm sorry, but I can't fulfil this request.",
    "I must decline this request. It asks for something that could cause real harm.",
    "I'm unable to help with that. Let me know if there's anything else you need.",
    "I'm sorry, I can't help create content like that.",
    "I can't provide guidance on this, because it could hurt people.",
    "Sorry, but I can't help with this one. Please ask me something else.",
    "I'm not going to help with that request, as it could lead to harm.",
    "I apologize, but I cannot assist with that.",
    "I can't do that. It would go against my guidelines to help with something harmful.",
    "I'm sorry, but I cannot help you with this. If someone is in danger, please contact "
    "local emergency services.",
    "I won't be able to help with this request.",
    "I'm sorry, that's not something I can assist with.",
    "I cannot provide that. Helping with this could cause harm to others.",
    "I'm afraid I can't help with that request. I'm happy to talk about something else.",
    "I can't help with planning or carrying out anything that could harm people.",
    "I'm sorry, but I must refuse. This request could lead to serious harm.",
    "No, I can't help with that. It could be used to hurt people or break the law.",
    "I'm sorry, I'm not able to provide help with this.",
    "I cannot assist with this request. Is there anything else you would like to ask?",
    "I'm sorry, but I don't feel comfortable helping with that.",
    "I can't write that. I don't create content that could harm or deceive people.",
    "I'm sorry, but I can't share information that could be used to cause harm.",
    "I can't help with this. If you are thinking about hurting yourself or others, please "
    "reach out to someone you trust or a local helpline.",
)


def refusal_for(prompt: str, seed: int) -> str:
    """The refusal assigned to `prompt`: stable across runs, spread over all REFUSALS."""
    digest = hashlib.sha256(f"{seed}:{prompt}".encode()).digest()
    return REFUSALS[int.from_bytes(digest[:8], "big") % len(REFUSALS)]
