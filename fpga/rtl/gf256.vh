// GF(2^8) arithmetic for the Reed-Solomon FEC (fpga/ICD.md, "Forward error correction"):
// polynomial basis, primitive polynomial 0x100 | `OH_RS_PRIMITIVE_LOW. Included inside a
// module. With a constant operand gf_mul folds to a few XORs.
function [7:0] gf_mul(input [7:0] a, input [7:0] b);
    integer n;
    reg [7:0] p, x;
    begin
        p = 8'h00;
        x = a;
        for (n = 0; n < 8; n = n + 1) begin
            if (b[n]) p = p ^ x;
            x = {x[6:0], 1'b0} ^ (x[7] ? `OH_RS_PRIMITIVE_LOW : 8'h00);
        end
        gf_mul = p;
    end
endfunction
