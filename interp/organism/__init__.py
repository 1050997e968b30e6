"""The project's model organisms: the chat-tune of the bundled Gemma 3 270M base (recipe, teacher
data, LoRA training, card metrics)."""
