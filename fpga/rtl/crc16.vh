// CRC-16/CCITT-FALSE, one byte (MSB first), as a function (included where needed).
function [15:0] crc16_byte(input [15:0] crc, input [7:0] b);
    integer i;
    reg [15:0] c;
    begin
        c = crc ^ {b, 8'h00};
        for (i = 0; i < 8; i = i + 1)
            c = c[15] ? ((c << 1) ^ 16'h1021) : (c << 1);
        crc16_byte = c;
    end
endfunction
