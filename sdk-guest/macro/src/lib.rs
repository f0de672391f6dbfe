//! The `#[squall_sdk::action]` attribute. Use it through `squall_sdk`.

#![forbid(unsafe_code)]

use proc_macro::TokenStream;
use quote::quote;
use syn::{ItemFn, ItemImpl, parse_macro_input};

/// Export a function as this component's action.
///
/// The function takes `(&squall_sdk::Context, P)` where `P: Deserialize` and
/// returns `squall_sdk::Result<R>` where `R: Serialize`. See `squall_sdk`.
#[proc_macro_attribute]
pub fn action(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let attr = proc_macro2::TokenStream::from(attr);
        return syn::Error::new_spanned(attr, "#[squall_sdk::action] takes no arguments")
            .to_compile_error()
            .into();
    }
    let func = parse_macro_input!(item as ItemFn);
    if func.sig.inputs.len() != 2 {
        return syn::Error::new_spanned(
            &func.sig,
            "an action takes two arguments: (ctx: &squall_sdk::Context, params: YourParams)",
        )
        .to_compile_error()
        .into();
    }
    let name = &func.sig.ident;
    quote! {
        #func
        ::squall_sdk::export_action!(#name);
    }
    .into()
}

/// Export a sensor: put it on the `impl squall_sdk::sensor::Sensor for T`
/// block. See `squall_sdk::sensor`.
#[proc_macro_attribute]
pub fn sensor(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let attr = proc_macro2::TokenStream::from(attr);
        return syn::Error::new_spanned(attr, "#[squall_sdk::sensor] takes no arguments")
            .to_compile_error()
            .into();
    }
    let block = parse_macro_input!(item as ItemImpl);
    if block.trait_.is_none() {
        return syn::Error::new_spanned(
            &block.self_ty,
            "#[squall_sdk::sensor] goes on `impl squall_sdk::sensor::Sensor for YourType`",
        )
        .to_compile_error()
        .into();
    }
    let ty = &block.self_ty;
    quote! {
        #block
        ::squall_sdk::export_sensor!(#ty);
    }
    .into()
}
