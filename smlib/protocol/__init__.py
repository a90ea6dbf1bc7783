"""The SMAPIv1 wire: XML-RPC codec, dispatch, SR base class, SR errors, the SMlog line."""
