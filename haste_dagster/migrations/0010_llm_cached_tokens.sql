-- The part of a call's prompt_tokens the server answered from its prompt cache: OpenAI's
-- usage.prompt_tokens_details.cached_tokens (billed at a discount), and what llama.cpp and
-- vLLM report the same way. 0 when the server says nothing.
ALTER TABLE llm_calls ADD COLUMN cached_tokens integer NOT NULL DEFAULT 0
    CHECK (cached_tokens >= 0);
