//! The conformance suite: every scenario, written once (`scenarios.rs`, `faults.rs`), runs
//! through every transport adapter. reqwest and hyper run on tokio; isahc runs on
//! `futures::executor` with no tokio anywhere on the client side (the auth server runs on its
//! own thread). Test names read `<adapter>::<scenario>`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod adapters;
mod faults;
mod oauth;
mod provider;
mod rotation;
mod scenarios;
mod session;

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod reqwest {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    crate::$scenario::<crate::adapters::Reqwest>().await;
                }
            )*
        }
        mod hyper {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    crate::$scenario::<crate::adapters::Hyper>().await;
                }
            )*
        }
        mod isahc {
            $(
                #[test]
                fn $scenario() {
                    futures_executor::block_on(crate::$scenario::<crate::adapters::Isahc>());
                }
            )*
        }
    };
}

use faults::*;
use oauth::*;
use provider::*;
use rotation::*;
use scenarios::*;
use session::*;

conformance!(
    reuses_one_token,
    a_thousand_requests_on_an_expired_token_share_one_fetch,
    a_401_storm_on_a_revoked_token_causes_one_refetch,
    proactive_refresh_before_expiry,
    a_server_that_always_rejects_aborts_after_five_recoveries,
    the_token_goes_only_to_the_base_origin,
    redirects_never_carry_credentials_to_another_origin,
    session_login_refresh_logout,
    two_users_concurrently_never_share_a_token,
    rotation_with_parallel_requests_and_the_grace_window,
    request_builder_features,
    token_endpoint_500,
    token_endpoint_503_then_success,
    token_endpoint_slower_than_the_timeout,
    token_endpoint_garbage_body,
    refresh_invalid_grant_400,
    refresh_connection_reset_mid_response,
    resource_401_for_a_revoked_token,
    resource_401_forever,
    resource_429_with_retry_after,
    resource_slower_than_the_timeout,
    the_server_goes_away_and_comes_back,
    a_failed_proactive_refresh_keeps_the_token_and_pauses,
    short_lived_tokens_cause_no_refetch_loop,
    zero_recoveries_and_configurable_rejection_statuses,
    header_name_and_formatter,
    typed_errors_for_statuses_bodies_and_connections,
    malformed_token_responses,
    a_late_rejection_uses_the_newer_token,
    independent_clients_and_custom_runtime_hooks,
    form_encoded_auth_and_camel_case_responses,
    login_failures_are_typed,
    refresh_propagates_headers_data_and_params,
    refresh_without_a_new_refresh_token_and_refresh_token_only_sessions,
    the_session_payload_outlives_the_login_and_a_refresh_without_one,
    logout_always_clears_and_clear_calls_nothing,
    sessions_in_a_session_backend,
    login_and_logout_timeouts,
    oauth_client_credentials_with_basic_and_post_auth,
    oauth_error_paths_and_the_retry_rule,
    oauth_password_login_refresh_rotation_and_revocation,
    hostile_expiries_are_typed_errors_and_the_next_request_starts_clean,
    a_panicking_provider_fails_its_waiters_and_the_next_request_starts_clean,
    a_slow_refresh_still_leaves_the_full_grace_window,
    a_refresh_whose_callers_were_all_dropped_is_completed_and_stored,
    ten_thousand_cookie_sessions_with_concurrent_401s_never_resend_a_refresh_token,
);
