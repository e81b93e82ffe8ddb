"""Shared library of the token-family plugins (text, vision-language, audio-language, audio
tokens): what every plugin that scores token sequences needs. A library, not a registered
modality; the core never imports it."""
