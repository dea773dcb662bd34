"""Dagster resources for vendors with their own wire format (not OpenAI-compatible): Anthropic."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from ai_assets.dagster.resources import RemoteResource

if TYPE_CHECKING:  # the provider's module is imported when a run builds it
    from ai_assets.providers.anthropic import AnthropicProvider


class AnthropicResource(RemoteResource):
    """Claude models over Anthropic's Messages API, with prompt caching (``cache_control`` on the system message
    and the template's shared head).

    The key is read from ``ANTHROPIC_API_KEY`` when none is set; pass ``dg.EnvVar("ANTHROPIC_API_KEY")`` to make
    it explicit (it is sent only in the ``x-api-key`` header, never logged).

        import dagster as dg
        from ai_assets.dagster import AnthropicResource, prompt_asset

        summaries = prompt_asset("summaries", reviews, template="Summarize: {text}", provider_key="llm")
        defs = dg.Definitions(assets=[reviews, summaries], resources={
            "llm": AnthropicResource(model="claude-sonnet-4-5", api_key=dg.EnvVar("ANTHROPIC_API_KEY"))})
    """

    answer_fields: ClassVar[tuple[str, ...]] = ("model", "base_url")
    default_api_key_env: ClassVar[str] = "ANTHROPIC_API_KEY"
    model: str = Field(default="claude-sonnet-4-5", description="Claude model name, e.g. claude-sonnet-4-5")
    base_url: str | None = Field(default=None, description="The API's root (requests go to {base_url}/v1/messages);"
                                                           " default $ANTHROPIC_BASE_URL, else https://api.anthropic.com")
    api_key: str | None = Field(default=None, description="The API key; pass dg.EnvVar('ANTHROPIC_API_KEY'); "
                                                          "default $ANTHROPIC_API_KEY")
    max_tokens: int = Field(default=1024, description="An answer's token cap when PromptParams.max_output_tokens "
                                                      "gives none (Anthropic requires one)")
    cache_prefix: bool = Field(default=True, description="Mark the shared prompt prefix (system message, template "
                                                         "head) with cache_control")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra request headers (anthropic-beta, ...)")

    def build_provider(self) -> AnthropicProvider:
        from ai_assets.providers.anthropic import AnthropicProvider

        return AnthropicProvider(self.model, base_url=self.base_url, api_key=self.api_key,
                                 max_tokens=self.max_tokens, headers=self.headers, cache_prefix=self.cache_prefix,
                                 rate_limit=self.rate_limit(), max_response_bytes=self.max_response_bytes)
