"""ptmech's one layer convention, the residual index k, which every config key, table
column, file and parameter that names a layer uses.

``k = 0..L``: ``k = 0`` is the embedding output (the input of block 0), ``k = l + 1`` the
output of decoder block ``l``, before the final norm. The paper's truthfulness "layer l" is
``k = l + 1``; its refusal "resid_pre layer l" is ``k = l``.

Wherever ptmech says *layer* (a ``layers`` parameter, a ``layer_convention`` attribute, the
cache's ``layers``), it means k; *block* means a decoder block (a hook on ``blocks[k - 1]``
reads or edits residual k; entropy neurons sit in the MLP of a block). No torch here:
cache-only jobs and the plan import it."""

LAYER_CONVENTION = (
    "k=0..L: k=0 embedding output (input of block 0), k=l+1 output of decoder block l, "
    "before the final norm; paper truth layer l -> k=l+1, refusal resid_pre l -> k=l"
)
