" collab.vim: Vim side of collab-ls (real-time collaborative editing).
" Needs Vim 9.0 (+job +channel, LSP channel mode, listener_add, text properties).
" The work is done in autoload/collab.vim, loaded on first use.
if exists('g:loaded_collab')
  finish
endif
let g:loaded_collab = 1

if v:version < 900 || !has('job') || !has('channel') || !has('textprop')
  echohl WarningMsg
  echomsg 'collab: needs Vim 9.0 with +job, +channel and +textprop'
  echohl None
  finish
endif

command! -nargs=? CollabShare call collab#share(<q-args>)
command! -nargs=+ -complete=dir CollabJoin call collab#join(<f-args>)
command! -nargs=1 CollabFollow call collab#follow(<q-args>)
command! -nargs=0 CollabUnfollow call collab#unfollow()
command! -nargs=+ CollabChat call collab#chat(<q-args>)
command! -nargs=0 CollabStatus call collab#show_status()
command! -nargs=0 CollabStop call collab#stop()

" The host's language server, through collab-ls (autoload/collab/language.vim).
command! -nargs=0 CollabHover call collab#language#hover()
command! -nargs=0 CollabDefinition call collab#language#definition()
command! -nargs=0 CollabReferences call collab#language#references()
command! -nargs=0 -bang CollabDiagnostics call collab#language#diagnostics_list(<bang>0)
command! -nargs=? CollabRename call collab#language#rename(<q-args>)
command! -nargs=0 CollabFormat call collab#language#format()
